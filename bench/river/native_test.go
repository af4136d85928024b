package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/registry"
)

// TestNativeVariant: River's job table as the inbox. A signed webhook is answered with
// its job's id, its redelivery as a duplicate of the same job (River's unique insert),
// a bad signature with 401 and a malformed body with 400, neither stored; the worker applies the job's payload (the
// message refers to the job), and an event that can never apply is cancelled
// without holding up the others.
func TestNativeVariant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dbURL := pgtest.NewPool(t)
	if err := setup(ctx, dbURL, true); err != nil {
		t.Fatal(err)
	}
	o := options{dbURL: dbURL, variant: "native", maxWorkers: 4}
	client, pool, err := newClient(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, ep := genericEndpoints(t)
	srv := httptest.NewServer(nativeHook(client, pool, ep))
	defer srv.Close()

	post := func(id string, body []byte, key string) (int, ingest.Result) {
		t.Helper()
		h, err := ep.Sign(key, srv.URL, id, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", srv.URL, bytes.NewReader(body))
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ack struct{ Events []ingest.Result }
		if resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(&ack); err != nil || len(ack.Events) != 1 {
				t.Fatalf("200 answered %v (%v), want one event", ack, err)
			}
			return 200, ack.Events[0]
		}
		return resp.StatusCode, ingest.Result{}
	}
	msg := ep.Example("m-native", time.Now())
	code, first := post("evt-1", msg, secret)
	if code != 200 || first.Duplicate {
		t.Fatalf("first delivery: %d %+v, want 200, not a duplicate", code, first)
	}
	if code, again := post("evt-1", msg, secret); code != 200 || !again.Duplicate || again.ID != first.ID {
		t.Errorf("redelivery: %d %+v, want 200, a duplicate of job %d", code, again, first.ID)
	}
	if code, _ := post("evt-2", ep.Example("m-forged", time.Now()), "whsec_"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"); code != http.StatusUnauthorized {
		t.Errorf("bad signature: %d, want 401", code)
	}
	noID := []byte(`{"type":"message.received","data":{}}`)
	if code, _ := post("evt-3", noID, secret); code != http.StatusBadRequest {
		t.Errorf("event with no message id: %d, want 400", code)
	}
	// Such a payload can still reach the worker (a job inserted by hand, or by a
	// build that checked less): it is cancelled with its error.
	bad, err := client.Insert(ctx, NativeArgs{Provider: "generic", ExternalID: "evt-3", ReceivedAt: time.Now(), Payload: noID}, nil)
	if err != nil {
		t.Fatal(err)
	}

	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer client.Stop(context.WithoutCancel(ctx))
	var states string
	pgtest.Eventually(t, "both jobs finalized", 30*time.Second, func() (bool, error) {
		err := pool.QueryRow(ctx, "SELECT string_agg(state::text, ' ' ORDER BY id) FROM river_job WHERE finalized_at IS NOT NULL").Scan(&states)
		return states == "completed cancelled", err
	})
	var jobs int
	var eventID int64
	if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM river_job), (SELECT inbound_event_id FROM messages WHERE provider_message_id = 'm-native')").Scan(&jobs, &eventID); err != nil {
		t.Fatal(err)
	}
	if jobs != 2 || eventID != first.ID {
		t.Errorf("%d jobs, message of event %d; want 2 jobs (the forged and the malformed were never stored), the message of job %d", jobs, eventID, first.ID)
	}
	var errs []byte
	pool.QueryRow(ctx, "SELECT errors FROM river_job WHERE id = $1", bad.Job.ID).Scan(&errs)
	if len(errs) == 0 {
		t.Error("the cancelled job records no error")
	}
}

// secret is the generic provider's secret in the tests.
const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// genericEndpoints opens the providers' endpoints with the generic provider
// configured with secret, and returns them with the generic one.
func genericEndpoints(t *testing.T) ([]provider.Endpoint, provider.Endpoint) {
	t.Helper()
	endpoints, err := registry.Open(provider.Config{Values: map[string]string{generic.SecretsKey: secret}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range endpoints {
		if e.Name == generic.Provider.Name {
			return endpoints, e
		}
	}
	t.Fatal("no generic endpoint")
	return nil, provider.Endpoint{}
}

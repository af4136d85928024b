package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"inboxd/internal/pgtest"
	"inboxd/internal/privacy"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/readmodel"
)

// TestErasureAndExport drives the privacy endpoints as an operator would: export a
// contact (the "+" URL-escaped), count what an erasure would remove (dry runs), erase
// them, poll the receipt to done, export again
// (empty), and see a redelivery answered duplicate; bad requests are 400 with a
// reason, API tokens are refused, and nothing answers with the address.
func TestErasureAndExport(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, true)
	post := func(id, contact, text string) (int, []byte) {
		body := fmt.Appendf(nil, `{"type":"message.received","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":%q,"text":%q}}`,
			time.Now().UTC().Format(time.RFC3339), id, contact, text)
		resp, err := http.DefaultClient.Do(providertest.Request(t, "generic", a.url, "", "", "evt-"+id, body, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	// The contact's second message spells the number as people write it: it is the
	// same contact, in the same conversation, exported and erased with the first.
	for i, c := range []string{"+15552223333", "1 (555) 222-3333", "+15559998888"} {
		if status, _ := post(fmt.Sprint("m", i), c, "words "+c); status != 200 {
			t.Fatalf("webhook: %d", status)
		}
	}
	pgtest.Eventually(t, "messages stored", 30*time.Second, func() (bool, error) {
		var n int
		err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM messages`).Scan(&n)
		return n == 3, err
	})

	status, body := a.get(t, "/v1/contacts/%2B15552223333/export", adminToken)
	exp := decode[struct {
		Contact       string
		Conversations []struct{ Messages []readmodel.Message }
		Events        []struct{ Payload map[string]any }
	}](t, body)
	if status != 200 || exp.Contact != "+15552223333" || len(exp.Conversations) != 1 || len(exp.Conversations[0].Messages) != 2 || len(exp.Events) != 2 {
		t.Fatalf("export = %d %s", status, body)
	}
	// The export is a contact's personal data: no cache may keep it.
	req, _ := http.NewRequest("GET", a.url+"/v1/contacts/%2B15552223333/export", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("export: Cache-Control %q (%v), want no-store", resp.Header.Get("Cache-Control"), err)
	} else {
		resp.Body.Close()
	}
	if status, _ := a.get(t, "/v1/contacts/%2B15552223333/export", readToken); status != 401 {
		t.Errorf("export with an API token = %d, want 401", status)
	}

	long := `{"contact":"+15552223333"` + strings.Repeat(" ", 4<<10) + `}` // valid, but past the 4 KiB an erasure's body may take
	if status, body := a.call(t, "POST", "/v1/erasures", adminToken, []byte(long)); status != 400 || !strings.Contains(string(body), "body is larger than 4096 bytes") {
		t.Errorf("POST /v1/erasures with a %d-byte body = %d %s, want 400 naming the bound", len(long), status, body)
	}
	for _, bad := range []string{`{}`, `{"contact":"+1555","extra":1}`, `not json`, `{"contact":"+15552223333","provider":"pigeon"}`} {
		if status, body := a.call(t, "POST", "/v1/erasures", adminToken, []byte(bad)); status != 400 || !strings.Contains(string(body), "bad_parameter") {
			t.Errorf("POST /v1/erasures %s = %d %s, want 400", bad, status, body)
		}
	}
	// A body of the wrong shape is described in JSON's terms, not Go's.
	for bad, want := range map[string]string{
		`[]`:                                  "body must be a JSON object, got an array",
		`{"contact":5}`:                       "contact must be a string, got a number",
		`{"contact":"+1555","dry_run":"yes"}`: "dry_run must be a boolean, got a string",
		``:                                    "body is empty",
	} {
		status, body := a.call(t, "POST", "/v1/erasures", adminToken, []byte(bad))
		if status != 400 || !strings.Contains(string(body), want) || strings.Contains(string(body), "Go ") {
			t.Errorf("POST /v1/erasures %s = %d %s, want 400 saying %q", bad, status, body, want)
		}
	}
	// A dry run counts and erases nothing; it shows the address as it was looked up,
	// so that a number without its country code is seen for what it is.
	twilio := "twilio"
	for _, c := range []struct {
		body string
		want privacy.Preview
	}{
		{`{"contact":"+1 555 222 3333","dry_run":true}`, privacy.Preview{DryRun: true, Contact: "+15552223333",
			Counts: privacy.Counts{Conversations: 1, Messages: 2, Events: 2, Changes: 3}}},
		{`{"contact":"555 222 3333","dry_run":true}`, privacy.Preview{DryRun: true, Contact: "+5552223333"}},
		{`{"contact":"+15552223333","provider":"twilio","dry_run":true}`, privacy.Preview{DryRun: true, Contact: "+15552223333", Provider: &twilio}},
	} {
		status, body := a.call(t, "POST", "/v1/erasures", adminToken, []byte(c.body))
		got := decode[privacy.Preview](t, body)
		if status != 200 || got.Contact != c.want.Contact || got.Counts != c.want.Counts || !got.DryRun ||
			(got.Provider == nil) != (c.want.Provider == nil) || (got.Provider != nil && *got.Provider != *c.want.Provider) {
			t.Errorf("POST /v1/erasures %s = %d %s, want 200 %+v", c.body, status, body, c.want)
		}
	}
	if status, body := a.call(t, "POST", "/v1/erasures", adminToken, []byte(`{"contact":"+15552223333","dry_run":"yes"}`)); status != 400 {
		t.Errorf(`POST /v1/erasures with dry_run "yes" = %d %s, want 400`, status, body)
	}
	var erasures int
	if err := a.pool.QueryRow(t.Context(), `SELECT count(*) FROM erasures`).Scan(&erasures); err != nil || erasures != 0 {
		t.Fatalf("after dry runs: %d erasures recorded (%v), want none", erasures, err)
	}
	if _, body := a.get(t, "/v1/contacts/%2B15552223333/export", adminToken); !strings.Contains(string(body), "words") {
		t.Fatalf("export after dry runs = %s, want the messages still there", body)
	}

	status, body = a.call(t, "POST", "/v1/erasures", adminToken, []byte(`{"contact":"+1 555 222 3333"}`))
	rec := decode[privacy.Receipt](t, body)
	if status != 202 || rec.State != "running" || strings.Contains(string(body), "5552223333") {
		t.Fatalf("POST /v1/erasures = %d %s, want 202 running without the address", status, body)
	}
	pgtest.Eventually(t, "erasure done", 30*time.Second, func() (bool, error) {
		_, body := a.get(t, fmt.Sprint("/v1/erasures/", rec.ID), adminToken)
		rec = decode[privacy.Receipt](t, body)
		return rec.State == "done", nil
	})
	if rec.Counts != (privacy.Counts{Conversations: 1, Messages: 2, Events: 2, Changes: 3}) || rec.FinishedAt == nil {
		t.Errorf("receipt = %+v", rec)
	}
	if status, _ := a.get(t, "/v1/erasures/999999", adminToken); status != 404 {
		t.Errorf("unknown erasure = %d, want 404", status)
	}
	_, body = a.get(t, "/v1/contacts/%2B15552223333/export", adminToken)
	if strings.Contains(string(body), "words") || !strings.Contains(string(body), `"conversations":[]`) {
		t.Errorf("export after erasure = %s, want nothing", body)
	}
	_, body = a.get(t, "/v1/contacts/+15559998888/export", adminToken) // "+" unescaped in a path is a plus
	if !strings.Contains(string(body), "words +15559998888") {
		t.Errorf("the other contact's export = %s, want their message", body)
	}
	// The erased events stay as tombstones: a redelivery is a duplicate.
	resp, err := http.DefaultClient.Do(providertest.Request(t, "generic", a.url, "", "", "evt-m0",
		[]byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m0","channel":"+15550001111","contact":"+15552223333","text":"again"}}`), time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	ack := decode[struct{ Events []struct{ Duplicate bool } }](t, readAll(t, resp))
	if len(ack.Events) != 1 || !ack.Events[0].Duplicate {
		t.Errorf("redelivery after erasure = %+v, want duplicate", ack)
	}
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExportCutShortIsBroken: an export that fails after part of it was sent (here its
// last part, the parked statuses, cannot be read) ends the connection, so that the
// client reading it gets an error instead of a 200 whose document merely stops.
func TestExportCutShortIsBroken(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	// More than the export's 32 KiB buffer before the parked statuses.
	a.exec(t, `
INSERT INTO inbound_events (provider, external_id, state, processed_at, payload, contact)
SELECT 'generic', 'e' || g, 'processed', now(), jsonb_build_object('text', repeat('x', 500)), '+15550001111'
FROM generate_series(1, 200) g`)
	a.exec(t, `ALTER TABLE pending_statuses RENAME TO pending_statuses_away`)
	t.Cleanup(func() { a.exec(t, `ALTER TABLE pending_statuses_away RENAME TO pending_statuses`) })
	req, _ := http.NewRequest("GET", a.url+"/v1/contacts/%2B15550001111/export", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || err == nil {
		t.Errorf("an export cut short: %d, %d bytes read without an error (%v); want the 200's body broken off", resp.StatusCode, len(body), err)
	}
}

// TestHeadOfAnExport: a HEAD of an export answers as the GET would (its status and
// type, a bad address's 400 included) without reading the contact's history: it is
// answered while another transaction holds every table an export reads.
func TestHeadOfAnExport(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	head := func(path string) int {
		t.Helper()
		// Very wide: answered at once, it takes milliseconds; reading, it would wait
		// for the locks for ever.
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "HEAD", a.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("HEAD %s: %v", path, err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("HEAD %s: Content-Type %q, want the GET's application/json", path, ct)
		}
		return resp.StatusCode
	}
	tx, err := a.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(context.Background()) }) // first: the server's close waits for the export
	if _, err := tx.Exec(t.Context(), `LOCK TABLE conversations, messages, inbound_events, pending_statuses IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	status := head("/v1/contacts/%2B15552223333/export")
	badStatus := head("/v1/contacts/%20/export")
	tx.Rollback(t.Context())
	if status != 200 {
		t.Errorf("HEAD of an export while its tables are locked = %d, want 200 at once", status)
	}
	if get, _ := a.get(t, "/v1/contacts/%20/export", adminToken); badStatus != get || get != 400 {
		t.Errorf("HEAD of an export of a blank address = %d, the GET's %d, want both 400", badStatus, get)
	}
}

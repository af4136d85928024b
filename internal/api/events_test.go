package api

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"inboxd/internal/ingest"
	"inboxd/internal/readmodel"
)

func genericPayload(id string) string {
	return fmt.Sprintf(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"hi"}}`, id)
}

// waitState polls an event's state through the API.
func (a *testAPI) waitState(t *testing.T, id int64, want string) readmodel.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := a.get(t, "/v1/events/"+itoa(id), adminToken)
		e := decode[readmodel.Event](t, body)
		if e.State == want {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %d is %s after 10s, want %s", id, e.State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWebhookAndReadBack: the README's flow, every answer checked against the
// document: a signed webhook, then the conversation and its message through the API.
func TestWebhookAndReadBack(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, true)
	body := []byte(genericPayload("m-1"))
	status, ack := a.postGeneric(t, "evt-1", body)
	if status != 200 {
		t.Fatalf("webhook: %d %s", status, ack)
	}
	if status, _ := a.call(t, "POST", "/webhooks/generic", "", body, "Content-Type", "application/json"); status != 401 {
		t.Errorf("unsigned webhook: %d, want 401", status)
	}
	if status, _ := a.call(t, "POST", "/webhooks/twilio", "", nil, "Content-Type", "application/x-www-form-urlencoded"); status != 404 {
		t.Errorf("unconfigured twilio: %d, want 404", status)
	}
	ev := decode[struct{ Events []ingest.Result }](t, ack).Events[0]
	a.waitState(t, ev.ID, "processed")
	_, list := a.get(t, "/v1/conversations", readToken)
	convs := decode[struct{ Data []readmodel.Conversation }](t, list).Data
	if len(convs) != 1 || convs[0].ContactAddress != "+15552223333" {
		t.Fatalf("conversations = %+v", convs)
	}
	_, msgs := a.get(t, "/v1/conversations/"+itoa(convs[0].ID)+"/messages", readToken)
	m := decode[struct{ Data []readmodel.Message }](t, msgs).Data
	if len(m) != 1 || m[0].Text == nil || *m[0].Text != "hi" || m[0].ProviderMessageID != "m-1" {
		t.Errorf("messages = %+v", m)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, _ := a.get(t, path, ""); status != 200 {
			t.Errorf("GET %s = %d", path, status)
		}
	}
}

func TestEventsListAndDetail(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	for i := range 12 {
		state := []string{"pending", "processed", "dead"}[i%3]
		a.exec(t, `INSERT INTO inbound_events (provider, external_id, payload, headers, state, last_error)
VALUES ($1, $2, $3::jsonb, '{"User-Agent":"test"}', $4, CASE WHEN $4 = 'dead' THEN 'it broke' END)`,
			[]string{"generic", "twilio"}[i%2], "e"+strconv.Itoa(i), genericPayload("m"+strconv.Itoa(i)), state)
	}
	all := walk[readmodel.Event](t, a, "/v1/events?limit=5", adminToken)
	if len(all) != 12 || all[0].ID < all[11].ID || all[0].Payload != nil {
		t.Fatalf("events: %d, newest first %v, payload in list %s", len(all), all[0].ID > all[11].ID, all[0].Payload)
	}
	_, body := a.get(t, "/v1/events?state=dead&provider=twilio", adminToken)
	dead := decode[page[readmodel.Event]](t, body).Data
	for _, e := range dead {
		if e.State != "dead" || e.Provider != "twilio" || e.LastError == nil {
			t.Errorf("filtered list has %+v", e)
		}
	}
	if len(dead) != 2 {
		t.Errorf("dead twilio events: %d, want 2", len(dead))
	}
	// Did inboxd get a delivery? Its provider's id finds it, within its provider.
	_, body = a.get(t, "/v1/events?provider=twilio&external_id=e3", adminToken)
	if got := decode[page[readmodel.Event]](t, body).Data; len(got) != 1 || got[0].ExternalID != "e3" || got[0].Provider != "twilio" {
		t.Errorf("twilio's e3: %s, want that one event", body)
	}
	_, body = a.get(t, "/v1/events?provider=generic&external_id=e3", adminToken)
	if got := decode[page[readmodel.Event]](t, body).Data; len(got) != 0 {
		t.Errorf("generic's e3 (twilio's): %s, want none", body)
	}
	if status, body := a.get(t, "/v1/events?external_id=e3", adminToken); status != 400 || !strings.Contains(string(body), "choose the provider too") {
		t.Errorf("an external id without a provider: %d %s, want 400 asking for the provider", status, body)
	}
	status, body := a.get(t, "/v1/events/"+itoa(all[0].ID), adminToken)
	e := decode[readmodel.Event](t, body)
	if status != 200 || !strings.Contains(string(e.Payload), "message_id") || !strings.Contains(string(e.Headers), "User-Agent") {
		t.Errorf("event detail: %d %s", status, body)
	}
	// Replaying an event some processor is working on changes nothing: it is neither
	// taken from its holder nor given fresh attempts.
	var inFlight int64
	err := a.pool.QueryRow(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, state, attempts, locked_by, locked_until)
VALUES ('generic', 'busy', '{}', 'processing', 3, 'other-process', now() + interval '30 seconds') RETURNING id`).Scan(&inFlight)
	if err != nil {
		t.Fatal(err)
	}
	status, body = a.call(t, "POST", "/v1/events/"+itoa(inFlight)+"/replay", adminToken, nil)
	if e := decode[readmodel.Event](t, body); status != 200 || e.State != "processing" || e.Attempts != 3 {
		t.Errorf("replay of an in-flight event: %d %s, want it still processing with 3 attempts", status, body)
	}
	for path, want := range map[string]int{"/v1/events/424242": 404, "/v1/events?state=done": 400, "/v1/events/x": 400} {
		if status, _ := a.get(t, path, adminToken); status != want {
			t.Errorf("GET %s = %d, want %d", path, status, want)
		}
	}
}

// TestReplay: a dead event is requeued and processed; replaying twice is harmless;
// bulk replay is bounded.
func TestReplay(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, true)
	for i := range 5 {
		a.exec(t, `INSERT INTO inbound_events (provider, external_id, payload, state, attempts, last_error)
VALUES ('generic', $1, $2::jsonb, 'dead', 12, 'failed before the fix')`, "d"+strconv.Itoa(i), genericPayload("dm"+strconv.Itoa(i)))
	}
	var first int64
	a.pool.QueryRow(context.Background(), "SELECT min(id) FROM inbound_events").Scan(&first)
	for range 2 { // idempotent
		status, body := a.call(t, "POST", "/v1/events/"+itoa(first)+"/replay", adminToken, nil)
		if status != 200 {
			t.Fatalf("replay: %d %s", status, body)
		}
		// The answer is the event as listed (an Event), not its payload or headers.
		if e := decode[map[string]any](t, body); e["payload"] != nil || e["headers"] != nil || e["id"] != float64(first) {
			t.Errorf("replay answered %s, want event %d without its payload and headers", body, first)
		}
	}
	e := a.waitState(t, first, "processed")
	if e.Attempts != 1 {
		t.Errorf("replayed event took %d attempts, want 1 (fresh attempts)", e.Attempts)
	}
	if status, _ := a.call(t, "POST", "/v1/events/999999/replay", adminToken, nil); status != 404 {
		t.Errorf("replay of unknown event: %d, want 404", status)
	}
	status, body := a.call(t, "POST", "/v1/events/replay?state=dead&limit=2", adminToken, nil)
	if n := decode[map[string]int](t, body)["replayed"]; status != 200 || n != 2 {
		t.Errorf("bulk replay limit 2: %d %s", status, body)
	}
	status, body = a.call(t, "POST", "/v1/events/replay?state=dead", adminToken, nil)
	if n := decode[map[string]int](t, body)["replayed"]; status != 200 || n != 2 {
		t.Errorf("bulk replay of the rest: %d %s", status, body)
	}
	for _, bad := range []string{"?state=pending", "?state=dead&limit=0", "?state=dead&limit=10001", ""} {
		if status, _ := a.call(t, "POST", "/v1/events/replay"+bad, adminToken, nil); status != 400 {
			t.Errorf("POST /v1/events/replay%s = %d, want 400", bad, status)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := a.get(t, "/v1/stats", adminToken)
		s := decode[readmodel.Stats](t, body)
		if s.Dead == 0 && s.Pending == 0 && s.Processing == 0 {
			if s.ProcessedLastMinute != 5 || s.ReceivedLastMinute != 5 || s.OldestPendingAgeSeconds != nil ||
				s.ProcessedEstimate != 5 || !s.ProcessedExact {
				t.Errorf("stats after replay: %+v, want 5 processed (counted exactly) and 5 received in the last minute", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats never settled: %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStatsLanes: /v1/stats lists the lanes with pending events, busiest first, the
// ten busiest by name and the rest summed as "other".
func TestStatsLanes(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	// Lane i has i+1 pending events, lane-00 the fewest; one is due later (a retry).
	a.exec(t, `INSERT INTO inbound_events (provider, external_id, payload, lane, run_at)
SELECT 'generic', 'e-' || l || '-' || i, '{}', format('generic/lane-%s', lpad(l::text, 2, '0')),
       CASE WHEN l = 0 THEN now() + interval '1 hour' ELSE now() - interval '2 seconds' END
FROM generate_series(0, 11) AS l, generate_series(0, l) AS i`)
	_, body := a.get(t, "/v1/stats", adminToken)
	lanes := decode[readmodel.Stats](t, body).Lanes
	if len(lanes) != 11 {
		t.Fatalf("lanes: %+v, want the 10 busiest and other", lanes)
	}
	if l := lanes[0]; l.Lane != "generic/lane-11" || l.Pending != 12 || l.Lanes != 1 || l.OldestDueSeconds < 2 {
		t.Errorf("busiest lane: %+v, want generic/lane-11 with 12 pending, due 2 s ago", l)
	}
	if l := lanes[10]; l.Lane != "other" || l.Lanes != 2 || l.Pending != 3 || l.OldestDueSeconds < 2 {
		t.Errorf("last row: %+v, want other summing lane-00 (1, not due) and lane-01 (2)", l)
	}
}

package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestSubscriptions: an admin subscribes an endpoint; a webhook's message reaches it
// as conversation.created then message.created, signed with the secret the 201
// showed; the subscription's endpoints list, count, pause, resume, replay and delete,
// every answer as openapi.yaml describes it, and mistakes are 400s that say what to do.
func TestSubscriptions(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, true)
	rc := deliverytest.New(t)

	for _, tc := range []struct{ body, want string }{
		{`{"url": "` + rc.URL + `", "types": []}`, "at least one of"},
		{`{"url": "` + rc.URL + `", "types": ["message.deleted"]}`, "not a change type"},
		{`{"url": "ftp://example.com", "types": ["message.created"]}`, "http://"},
		{`{"url": "` + rc.URL + `", "types": ["message.created"], "providers": ["twillio"]}`, "not a provider"},
		{`{"url": "` + rc.URL + `", "types": ["message.created"], "secret": "mine"}`, `body has a field that is not taken here: \"secret\"`},
		{`not json`, "body is not JSON"},
		{`[]`, "body must be a JSON object, got an array; this endpoint takes {"},
		{`{"url": "` + rc.URL + `"} {"types": ["message.created"]}`, "with nothing after it"},
	} {
		status, body := a.call(t, "POST", "/v1/subscriptions", adminToken, []byte(tc.body))
		if status != 400 || !strings.Contains(string(body), tc.want) {
			t.Errorf("POST %s = %d %s, want 400 saying %q", tc.body, status, body, tc.want)
		}
	}
	if status, _ := a.call(t, "POST", "/v1/subscriptions", readToken, []byte(`{}`)); status != 401 {
		t.Errorf("POST with a read token = %d, want 401", status)
	}

	status, body := a.call(t, "POST", "/v1/subscriptions", adminToken,
		[]byte(`{"url": "`+rc.URL+`/hooks", "types": ["message.created", "conversation.created"]}`+"\n")) // as curl -d @file sends it
	sub := decode[delivery.Subscription](t, body)
	if status != 201 || !strings.HasPrefix(sub.Secret, "whsec_") || sub.State != "active" {
		t.Fatalf("POST /v1/subscriptions = %d %s", status, body)
	}
	rc.SetSecret(sub.Secret)
	path := "/v1/subscriptions/" + itoa(sub.ID)

	resp, err := http.DefaultClient.Do(providertest.Request(t, "generic", a.url, "", "", "evt-sub-1",
		[]byte(`{"type":"message.sent","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m1","channel":"+15550001111","contact":"+15552223333","text":"hello"}}`), time.Now()))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("webhook: %v %v", resp, err)
	}
	resp.Body.Close()
	pgtest.Eventually(t, "two changes delivered", time.Minute, func() (bool, error) { return len(rc.Delivered()) == 2, nil })
	got := rc.Delivered()
	if got[0].Type != "conversation.created" || got[1].Type != "message.created" || !got[0].Verified || !got[1].Verified {
		t.Fatalf("delivered %+v, want conversation.created then message.created, both verified", got)
	}

	status, body = a.get(t, "/v1/subscriptions", adminToken)
	if status != 200 || strings.Contains(string(body), "whsec_") || !strings.Contains(string(body), rc.URL) {
		t.Errorf("GET /v1/subscriptions = %d %s, want the subscription without its secret", status, body)
	}
	pgtest.Eventually(t, "the deliveries recorded", time.Minute, func() (bool, error) {
		_, body = a.get(t, path, adminToken)
		one := decode[delivery.Subscription](t, body)
		return one.Deliveries["delivered"] == 2 && one.Secret == sub.Secret, nil
	})
	status, body = a.get(t, path+"/deliveries?state=delivered&limit=1", adminToken)
	first := decode[page[delivery.Delivery]](t, body)
	if status != 200 || len(first.Data) != 1 || first.Data[0].ChangeID != got[1].ID || first.NextCursor == nil || *first.Data[0].LastStatus != 204 {
		t.Fatalf("deliveries = %d %s", status, body)
	}
	status, body = a.get(t, path+"/deliveries?state=delivered&before="+*first.NextCursor, adminToken)
	if rest := decode[page[delivery.Delivery]](t, body); status != 200 || len(rest.Data) != 1 || rest.Data[0].ChangeID != got[0].ID {
		t.Errorf("second page = %d %s", status, body)
	}
	if status, body = a.get(t, path+"/deliveries?state=lost", adminToken); status != 400 || !strings.Contains(string(body), "dead") {
		t.Errorf("state=lost = %d %s, want 400 listing the states", status, body)
	}

	if status, body = a.call(t, "POST", path+"/pause", adminToken, nil); status != 200 || decode[delivery.Subscription](t, body).State != "paused" {
		t.Errorf("pause = %d %s", status, body)
	}
	if status, body = a.call(t, "POST", path+"/resume", adminToken, nil); status != 200 || decode[delivery.Subscription](t, body).State != "active" {
		t.Errorf("resume = %d %s", status, body)
	}

	status, body = a.call(t, "POST", path+"/ping", adminToken, nil)
	if p := decode[delivery.Ping](t, body); status != 200 || !p.Delivered || p.Status == nil || *p.Status != 204 {
		t.Errorf("ping = %d %s, want 200 saying the endpoint answered 204", status, body)
	}
	if status, _ = a.call(t, "POST", "/v1/subscriptions/999999/ping", adminToken, nil); status != 404 {
		t.Errorf("ping of no subscription = %d, want 404", status)
	}

	if status, body = a.call(t, "POST", path+"/replay", adminToken, []byte(`{}`)); status != 400 || !strings.Contains(string(body), "from is required") {
		t.Errorf("replay without from = %d %s", status, body)
	}
	if status, body = a.call(t, "POST", path+"/replay", adminToken, []byte(`{"from": "yesterday"}`)); status != 400 || !strings.Contains(string(body), "not a change id (such as 10402.4)") ||
		!strings.Contains(string(body), "a dead delivery's change_id") || strings.Contains(string(body), "start again without it") {
		t.Errorf("replay from no change id = %d %s, want 400 saying what from takes", status, body)
	}
	if status, body = a.call(t, "POST", path+"/replay", adminToken, []byte(`{"from": "99999999.1"}`)); status != 400 || !strings.Contains(string(body), "after the subscription's position") {
		t.Errorf("replay from the future = %d %s", status, body)
	}
	if status, body = a.call(t, "POST", path+"/replay", adminToken, []byte(`{"from": "`+got[1].ID+`"}`)); status != 200 {
		t.Fatalf("replay = %d %s", status, body)
	}
	pgtest.Eventually(t, "the replayed change delivered again", time.Minute, func() (bool, error) {
		n := 0
		for _, r := range rc.Got() {
			if r.ID == got[1].ID && r.Status/100 == 2 {
				n++
			}
		}
		return n == 2, nil
	})
	for _, r := range rc.Got() {
		if r.ID == got[0].ID && r.At.After(got[1].At) {
			t.Errorf("the change before from was delivered again")
		}
	}

	// An update keeps the position and the secret.
	status, body = a.call(t, "PATCH", path, adminToken, []byte(`{"types": ["message.created"]}`))
	if up := decode[delivery.Subscription](t, body); status != 200 || !slices.Equal(up.Types, []string{"contact.erased", "message.created"}) || up.Cursor != decode[delivery.Subscription](t, mustGet(t, a, path)).Cursor {
		t.Errorf("PATCH types = %d %s", status, body)
	}
	status, body = a.call(t, "PATCH", path, adminToken, []byte(`{"providers": ["generic:acme"]}`))
	if up := decode[delivery.Subscription](t, body); status != 200 || !slices.Equal(up.Providers, []string{"generic:acme"}) {
		t.Errorf("PATCH providers = %d %s", status, body)
	}
	status, body = a.call(t, "PATCH", path, adminToken, []byte(`{"providers": []}`))
	if up := decode[delivery.Subscription](t, body); status != 200 || up.Providers != nil || !strings.Contains(string(body), `"providers":null`) {
		t.Errorf("PATCH providers [] = %d %s, want every provider (null)", status, body)
	}
	for _, bad := range []struct{ body, want string }{
		{`{}`, "nothing to change"},
		{`{"providers": ["twillio"]}`, "not a provider"},
		{`{"url": "ftp://example.com"}`, "http://"},
		{`{"secret": "mine"}`, `body has a field that is not taken here: \"secret\"`},
	} {
		if status, body = a.call(t, "PATCH", path, adminToken, []byte(bad.body)); status != 400 || !strings.Contains(string(body), bad.want) {
			t.Errorf("PATCH %s = %d %s, want 400 saying %q", bad.body, status, body, bad.want)
		}
	}
	if status, _ = a.call(t, "PATCH", "/v1/subscriptions/999999", adminToken, []byte(`{"types": ["message.created"]}`)); status != 404 {
		t.Errorf("PATCH of no subscription = %d, want 404", status)
	}

	// Rotation: a new secret, the old one kept signing for a day unless told.
	status, body = a.call(t, "POST", path+"/rotate-secret", adminToken, nil)
	rotated := decode[delivery.Subscription](t, body)
	if status != 200 || rotated.Secret == sub.Secret || !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.PreviousSecretExpiresAt == nil ||
		time.Until(*rotated.PreviousSecretExpiresAt) < 23*time.Hour || time.Until(*rotated.PreviousSecretExpiresAt) > 25*time.Hour {
		t.Errorf("rotate-secret without a body = %d %s, want a new secret and the old one kept a day", status, body)
	}
	if status, body = a.call(t, "POST", path+"/rotate-secret", adminToken, nil); status != 409 || !strings.Contains(string(body), `"conflict"`) || !strings.Contains(string(body), "still signs until") {
		t.Errorf("a second rotation within the day = %d %s, want 409 saying until when the old secret signs", status, body)
	}
	status, body = a.call(t, "DELETE", path+"/previous-secret", adminToken, nil)
	if ended := decode[delivery.Subscription](t, body); status != 200 || ended.PreviousSecretExpiresAt != nil || ended.Secret != rotated.Secret {
		t.Errorf("DELETE previous-secret = %d %s, want the subscription with its secret and no previous one", status, body)
	}
	if status, body = a.call(t, "DELETE", "/v1/subscriptions/999999/previous-secret", adminToken, nil); status != 404 {
		t.Errorf("DELETE previous-secret of no subscription = %d %s, want 404", status, body)
	}
	status, body = a.call(t, "POST", path+"/rotate-secret", adminToken, []byte(`{"keep_previous_seconds": 0}`))
	if again := decode[delivery.Subscription](t, body); status != 200 || again.Secret == rotated.Secret || again.PreviousSecretExpiresAt != nil {
		t.Errorf("rotate-secret keeping nothing = %d %s, want a new secret and no previous one", status, body)
	}
	for _, bad := range []string{`{"keep_previous_seconds": -1}`, `{"keep_previous_seconds": 604801}`, `{"keep": 5}`} {
		if status, body = a.call(t, "POST", path+"/rotate-secret", adminToken, []byte(bad)); status != 400 {
			t.Errorf("rotate-secret %s = %d %s, want 400", bad, status, body)
		}
	}
	if status, body = a.call(t, "POST", "/v1/subscriptions/999999/rotate-secret", adminToken, nil); status != 404 {
		t.Errorf("rotate-secret of no subscription = %d %s, want 404", status, body)
	}

	// Retention deleted the first change: it cannot be sent again, and saying 200
	// would skip it without a word.
	if _, err := a.pool.Exec(context.Background(), `
WITH gone AS (DELETE FROM changes WHERE xid::text || '.' || seq = $1 RETURNING xid, seq)
INSERT INTO changes_horizon (xid, seq) SELECT xid, seq FROM gone`, got[0].ID); err != nil {
		t.Fatal(err)
	}
	if status, body = a.call(t, "POST", path+"/replay", adminToken, []byte(`{"from": "`+got[0].ID+`"}`)); status != 410 ||
		!strings.Contains(string(body), `"cursor_expired"`) || !strings.Contains(string(body), `replay from \"\" to send every change kept`) {
		t.Errorf("replay from a change retention deleted = %d %s, want 410 cursor_expired saying what to do", status, body)
	}

	if status, _ = a.call(t, "DELETE", path, adminToken, nil); status != 204 {
		t.Errorf("DELETE = %d, want 204", status)
	}
	if status, body = a.get(t, path, adminToken); status != 404 || !strings.Contains(string(body), "GET /v1/subscriptions lists them") {
		t.Errorf("GET after DELETE = %d %s, want 404 saying where the list is", status, body)
	}
	if status, _ = a.call(t, "POST", path+"/pause", adminToken, nil); status != 404 {
		t.Errorf("pause after DELETE = %d, want 404", status)
	}
}

// TestSubscriptionAnswers: empty lists are [] (never null); a body is read no
// further than its bound; a bad before= is a 400; and each change that gives this
// process's deliverer work wakes it at once (create, resume, replay) rather than
// leaving it to the next sweep, while one that gives none (pause) does not.
func TestSubscriptionAnswers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	var woken atomic.Int32
	hooks := ingest.NewHandlers(ingest.Config{Endpoints: providertest.Endpoints(t, "http://x", nil)},
		ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{}), zap.NewNop())
	srv := httptest.NewServer(NewRouter(Deps{
		Pool: pool, Webhooks: hooks, Deliveries: &Deliveries{AllowPrivate: true, Wake: func() { woken.Add(1) }},
		AdminTokens: []string{adminToken}, Log: zap.NewNop(), Listening: func() bool { return true },
	}))
	t.Cleanup(srv.Close)
	a := &testAPI{url: srv.URL, pool: pool}

	if status, body := a.get(t, "/v1/subscriptions", adminToken); status != 200 || strings.TrimSpace(string(body)) != `{"data":[]}` {
		t.Errorf("GET /v1/subscriptions with none = %d %s, want an empty list", status, body)
	}
	big := `{"url": "http://127.0.0.1:9/hooks", "types": ["message.created"], "pad": "` + strings.Repeat("x", maxSubscriptionBody) + `"}`
	if status, body := a.call(t, "POST", "/v1/subscriptions", adminToken, []byte(big)); status != 400 || !strings.Contains(string(body), "body is larger than 16384 bytes; this endpoint takes {") || strings.Contains(string(body), "at most") {
		t.Errorf("POST of %d bytes = %d %s, want 400 saying the body is too large", len(big), status, body)
	}
	status, body := a.call(t, "POST", "/v1/subscriptions", adminToken, []byte(`{"url": "http://127.0.0.1:9/hooks", "types": ["message.created"]}`))
	if status != 201 || woken.Load() != 1 {
		t.Fatalf("POST = %d %s, woken %d times; want 201 and the deliverer woken", status, body, woken.Load())
	}
	path := "/v1/subscriptions/" + itoa(decode[delivery.Subscription](t, body).ID)
	if status, body := a.get(t, path+"/deliveries", adminToken); status != 200 || !strings.Contains(string(body), `"data":[]`) {
		t.Errorf("deliveries of a new subscription = %d %s, want an empty list", status, body)
	}
	if status, body := a.get(t, path+"/deliveries?before=0", adminToken); status != 400 || !strings.Contains(string(body), "next_cursor") {
		t.Errorf("deliveries?before=0 = %d %s, want 400 saying where cursors come from", status, body)
	}
	// Three dead deliveries, walked newest first in pages of 2.
	for range 3 {
		if _, err := pool.Exec(context.Background(), `
WITH c AS (INSERT INTO changes (type, conversation_id, data) VALUES ('contact.erased', 1, '{}') RETURNING xid, seq)
INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state) SELECT $1, xid, seq, 1, 'dead' FROM c`,
			decode[delivery.Subscription](t, body).ID); err != nil {
			t.Fatal(err)
		}
	}
	var walked []int64
	for cursor := ""; ; {
		_, page1 := a.get(t, path+"/deliveries?state=dead&limit=2"+cursor, adminToken)
		p := decode[page[delivery.Delivery]](t, page1)
		for _, d := range p.Data {
			walked = append(walked, d.ID)
		}
		if p.NextCursor == nil || len(walked) > 3 {
			break
		}
		cursor = "&before=" + *p.NextCursor
	}
	if !slices.Equal(walked, []int64{3, 2, 1}) {
		t.Errorf("dead deliveries walked in pages of 2: %v, want 3, 2, 1", walked)
	}
	for _, step := range []struct {
		action string
		body   string
		woken  int32
	}{{"pause", "", 1}, {"resume", "", 2}, {"replay", `{"from": ""}`, 3}} {
		if status, body := a.call(t, "POST", path+"/"+step.action, adminToken, []byte(step.body)); status != 200 || woken.Load() != step.woken {
			t.Errorf("%s = %d %s, deliverer woken %d times, want %d", step.action, status, body, woken.Load(), step.woken)
		}
	}
}

// mustGet is the body of a GET that must answer 200.
func mustGet(t *testing.T, a *testAPI, path string) []byte {
	t.Helper()
	status, body := a.get(t, path, adminToken)
	if status != 200 {
		t.Fatalf("GET %s = %d %s", path, status, body)
	}
	return body
}

package console

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/pgtest"
)

// TestSubscriptionActions: an admin pauses, resumes, pings and replays a
// subscription from the console. Pause and resume change its state (resume wakes
// the deliverer) and the list then says what was done; a ping shows the endpoint's
// answer, good or bad; a replay from a delivered change is accepted, one from a
// change retention deleted is a 410 saying so. A read-only session sees no buttons
// and is refused.
func TestSubscriptionActions(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	rc := deliverytest.New(t)
	sub, err := delivery.Create(ctx, pool, rc.URL, []string{"message.created"}, true, "generic:acme")
	if err != nil {
		t.Fatal(err)
	}
	rc.SetSecret(sub.Secret)
	d := delivery.New(pool, delivery.Config{AllowPrivate: true}, zap.NewNop(), delivery.NewMetrics(prometheus.NewRegistry()))
	woken := 0
	serve, csrf := adminConsole(Config{Pool: pool, Ping: d.Ping, WakeDeliveries: func() { woken++ }})
	id := strconv.FormatInt(sub.ID, 10)
	base := "/console/subscriptions/" + id
	post := func(action string, form url.Values) (int, string, string) {
		form.Set("csrf", csrf)
		w := serve("POST", base+"/"+action, form.Encode())
		return w.Code, w.Header().Get("Location"), w.Body.String()
	}
	state := func() string {
		s, err := delivery.Get(ctx, pool, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s.State
	}

	if body := serve("GET", "/console/subscriptions", "").Body.String(); !strings.Contains(body, `id="pause-`+id+`"`) || !strings.Contains(body, `id="ping-`+id+`"`) ||
		strings.Contains(body, "rotated") || !strings.Contains(body, "only generic:acme") {
		t.Errorf("the list offers no pause or ping button, or speaks of a rotation before any, or hides the providers:\n%s", body)
	}
	rotated, err := delivery.RotateSecret(ctx, pool, sub.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc.SetSecret(rotated.Secret)
	if body := serve("GET", "/console/subscriptions", "").Body.String(); !strings.Contains(body, "rotated: the old secret signs too until") || strings.Contains(body, "whsec_") {
		t.Errorf("after a rotation the list does not say until when the old secret signs, or shows a secret:\n%s", body)
	}
	if status, to, _ := post("pause", url.Values{}); status != http.StatusSeeOther || to != "/console/subscriptions?done=pause" || state() != "paused" {
		t.Errorf("pause: %d to %q, state %s; want 303 to the list, paused", status, to, state())
	}
	if body := serve("GET", "/console/subscriptions?done=pause", "").Body.String(); !strings.Contains(body, "Paused: nothing is sent") || !strings.Contains(body, `id="resume-`+id+`"`) {
		t.Errorf("the list after a pause does not say so, or offers no resume:\n%s", body)
	}
	if status, _, _ := post("resume", url.Values{}); status != http.StatusSeeOther || state() != "active" || woken != 1 {
		t.Errorf("resume: %d, state %s, deliverer woken %d times; want 303, active, once", status, state(), woken)
	}

	if status, _, body := post("ping", url.Values{}); status != 200 || !strings.Contains(body, "the endpoint answered 204") || len(rc.Got()) != 1 || !rc.Got()[0].Verified {
		t.Errorf("ping: %d, the endpoint got %d requests; want 200 saying 204, one signed request:\n%s", status, len(rc.Got()), body)
	}
	rc.Answer(func(*http.Request, string, int) (int, http.Header) { return http.StatusUnauthorized, nil })
	if status, _, body := post("ping", url.Values{}); status != 200 || !strings.Contains(body, "not delivered: answered 401 Unauthorized") {
		t.Errorf("ping of an endpoint that answers 401: %d, want the page saying so:\n%s", status, body)
	}

	var kept, gone string
	if err := pool.QueryRow(ctx, `
WITH c AS (INSERT INTO changes (type, conversation_id, data) VALUES ('message.created', 1, '{}'), ('message.created', 2, '{}') RETURNING xid, seq),
     h AS (INSERT INTO changes_horizon (xid, seq) SELECT xid, seq FROM c ORDER BY xid, seq LIMIT 1 RETURNING xid, seq)
SELECT (SELECT xid::text || '.' || seq FROM c ORDER BY xid DESC, seq DESC LIMIT 1), (SELECT xid::text || '.' || seq FROM h)`).Scan(&kept, &gone); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE subscriptions SET (cursor_xid, cursor_seq) = (SELECT xid, seq FROM changes ORDER BY xid DESC, seq DESC LIMIT 1)`); err != nil {
		t.Fatal(err) // both fanned out
	}
	// The deliveries page offers a replay from a dead delivery's change, not from a
	// delivered one's.
	if _, err := pool.Exec(ctx, `
INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state, attempts)
SELECT $1, xid, seq, conversation_id, CASE WHEN xid::text || '.' || seq = $2 THEN 'dead' ELSE 'delivered' END, 1 FROM changes`, sub.ID, kept); err != nil {
		t.Fatal(err)
	}
	if body := serve("GET", base+"/deliveries", "").Body.String(); strings.Count(body, `>From here</button>`) != 1 || !strings.Contains(body, `name="from" value="`+kept+`"`) {
		t.Errorf("the deliveries page does not offer one replay, from the dead delivery's change %s:\n%s", kept, body)
	}
	if status, _, body := post("replay", url.Values{"from": {gone}}); status != http.StatusGone || !strings.Contains(body, "has deleted change "+gone) {
		t.Errorf("replay from a change retention deleted: %d, want 410 saying so:\n%s", status, body)
	}
	if status, to, _ := post("replay", url.Values{"from": {kept}}); status != http.StatusSeeOther || to != "/console/subscriptions?done=replay" || woken != 2 {
		t.Errorf("replay from a kept change: %d to %q, woken %d times; want 303 to the list, woken", status, to, woken)
	}

	const readToken = "read-token-0123456789"
	read := testConsole(Config{Pool: pool, Ping: d.Ping, ReadTokens: []string{readToken}})
	s, ck := newSession(newCredential(roleRead, readToken), time.Now(), false)
	if body := read("GET", "/console/subscriptions", "", ck).Body.String(); strings.Contains(body, `id="pause-`) || strings.Contains(body, `id="ping-`) {
		t.Errorf("a read-only session is offered actions:\n%s", body)
	}
	if w := read("POST", base+"/pause", "csrf="+s.csrf(), ck); w.Code != http.StatusForbidden || state() != "active" {
		t.Errorf("pause by a read-only session: %d, state %s; want 403, active", w.Code, state())
	}
}

package console

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"inboxd/internal/delivery"
	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/feed"
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

// TestSubscriptionEdits: an admin creates, changes, rotates and deletes
// subscriptions from the console. A create the delivery package refuses (a misspelt type, a private
// address) is a 400 on the list, saying why, with the form as typed; one it makes
// leads (303, so that a reload makes nothing more) to its secret's page, which an
// admin can open again; the list never shows a secret and the log never has one. A
// change shows the subscription as it is, refuses no type ticked (the form as
// typed, nothing changed) and keeps the secret. A
// rotation leads to the new secret, saying until when the old one signs; a second one
// while it does is a 409 saying so, one keeping nothing is made; the old secret can
// be stopped early. A delete asks first, saying what it drops, and deletes only when
// confirmed. A read-only session is refused each and changes nothing.
func TestSubscriptionEdits(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)
	serve, csrf := adminConsole(Config{Pool: pool, AllowPrivate: true, Log: zap.New(core)})
	post := func(path string, form url.Values) *httptest.ResponseRecorder {
		form.Set("csrf", csrf)
		return serve("POST", path, form.Encode())
	}
	count := func() (n int) {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM subscriptions`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	secretOf := func(id int64) (secret string, previous *string) {
		if err := pool.QueryRow(ctx, `SELECT secret, previous_secret FROM subscriptions WHERE id = $1`, id).Scan(&secret, &previous); err != nil {
			t.Fatal(err)
		}
		return secret, previous
	}

	list := serve("GET", "/console/subscriptions", "").Body.String()
	if !strings.Contains(list, `id="new-subscription"`) || strings.Count(list, `name="types"`) != len(feed.Types) || strings.Count(list, " checked>") != len(feed.Types) {
		t.Errorf("the list offers no new-subscription form with every type ticked:\n%s", list)
	}

	const endpoint = "http://127.0.0.1:9/hooks"
	w := post("/console/subscriptions", url.Values{"url": {endpoint}, "types": {"message.creatd"}})
	if body := w.Body.String(); w.Code != http.StatusBadRequest || !strings.Contains(body, `Not created: types: &#34;message.creatd&#34; is not a change type`) ||
		!strings.Contains(body, `value="`+endpoint+`"`) || strings.Contains(body, " checked>") || count() != 0 {
		t.Errorf("a misspelt type: %d, %d subscriptions; want 400 naming it, the URL kept, nothing ticked, nothing made:\n%s", w.Code, count(), body)
	}
	public, publicCSRF := adminConsole(Config{Pool: pool})
	w = public("POST", "/console/subscriptions", url.Values{"csrf": {publicCSRF}, "url": {endpoint}, "types": {"message.created"}}.Encode())
	if body := w.Body.String(); w.Code != http.StatusBadRequest || !strings.Contains(body, "INBOX_DELIVERY_ALLOW_PRIVATE") || count() != 0 {
		t.Errorf("a private address where they are refused: %d, %d subscriptions; want 400 naming the setting:\n%s", w.Code, count(), body)
	}

	w = post("/console/subscriptions", url.Values{"url": {endpoint}, "types": {"message.created"}, "providers": {"twilio, generic:acme"}})
	var sub delivery.Subscription
	subs, err := delivery.List(ctx, pool)
	if err != nil || len(subs) != 1 {
		t.Fatalf("after a create: %d subscriptions (%v), want 1:\n%s", len(subs), err, w.Body.String())
	}
	sub = subs[0]
	secret, _ := secretOf(sub.ID)
	id := strconv.FormatInt(sub.ID, 10)
	base := "/console/subscriptions/" + id
	if to := w.Header().Get("Location"); w.Code != http.StatusSeeOther || to != base+"/secret?done=create" ||
		!slices.Equal(sub.Types, []string{"contact.erased", "message.created"}) || !slices.Equal(sub.Providers, []string{"generic:acme", "twilio"}) {
		t.Errorf("create: %d to %q, types %v, providers %v; want 303 to its secret, message.created with contact.erased, the two providers", w.Code, to, sub.Types, sub.Providers)
	}
	// shows reads the secret page as the browser does after a redirect, and again on a reload.
	shows := func(done string, want ...string) {
		t.Helper()
		for range 2 {
			w := serve("GET", base+"/secret?done="+done, "")
			body := html.UnescapeString(w.Body.String())
			for _, s := range want {
				if w.Code != http.StatusOK || !strings.Contains(body, s) {
					t.Errorf("the secret page after %s: %d, want 200 showing %q:\n%s", done, w.Code, s, body)
				}
			}
		}
	}
	shows("create", "Subscription "+id+" created", `<pre id="secret" tabindex="0">`+secret+`</pre>`, "contact.erased, message.created, of generic:acme, twilio only")
	if count() != 1 {
		t.Errorf("reading the secret page made subscriptions: %d", count())
	}
	if list := serve("GET", "/console/subscriptions", "").Body.String(); strings.Contains(list, "whsec_") || !strings.Contains(list, `id="rotate-`+id+`"`) {
		t.Errorf("the list shows a secret, or offers no rotation:\n%s", list)
	}

	edit := serve("GET", base+"/edit", "").Body.String()
	if !strings.Contains(edit, `value="`+endpoint+`"`) || !strings.Contains(edit, `value="generic:acme, twilio"`) ||
		!strings.Contains(edit, `value="message.created" checked>`) || strings.Contains(edit, `value="conversation.created" checked>`) {
		t.Errorf("the edit form does not show the subscription as it is:\n%s", edit)
	}
	if w := post(base+"/edit", url.Values{"url": {endpoint + "/moved"}}); w.Code != http.StatusBadRequest ||
		!strings.Contains(w.Body.String(), "Not changed: types must name at least one") || !strings.Contains(w.Body.String(), `value="`+endpoint+`/moved"`) {
		t.Errorf("a change with no type ticked: %d, want 400 saying so, the URL as typed:\n%s", w.Code, w.Body.String())
	}
	if s, _ := delivery.Get(ctx, pool, sub.ID); s.URL != endpoint {
		t.Errorf("the refused change moved the URL to %s", s.URL)
	}
	w = post(base+"/edit", url.Values{"url": {endpoint + "/moved"}, "types": {"conversation.created"}, "providers": {" "}})
	if s, _ := delivery.Get(ctx, pool, sub.ID); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/subscriptions?done=update" ||
		s.URL != endpoint+"/moved" || !slices.Equal(s.Types, []string{"contact.erased", "conversation.created"}) || s.Providers != nil || s.Secret != secret {
		t.Errorf("a change: %d to %q, now %s %v %v, secret kept %v; want 303 to the list, the new URL and type, every provider, the secret kept",
			w.Code, w.Header().Get("Location"), s.URL, s.Types, s.Providers, s.Secret == secret)
	}
	w = post(base+"/rotate", url.Values{"keep": {"24h"}})
	rotated, previous := secretOf(sub.ID)
	if to := w.Header().Get("Location"); w.Code != http.StatusSeeOther || to != base+"/secret?done=rotate" || rotated == secret || previous == nil || *previous != secret {
		t.Errorf("rotate keeping a day: %d to %q, the old secret kept: %v; want 303 to the secret, the old one kept", w.Code, to, previous != nil)
	}
	shows("rotate", "Secret of subscription "+id+" rotated", `>`+rotated+`</pre>`, "The secret it replaced signs each delivery too until")
	if w := post(base+"/rotate", url.Values{"keep": {"24h"}}); w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "still signs until") {
		t.Errorf("a second rotation while the old secret signs: %d, want 409 saying until when:\n%s", w.Code, w.Body.String())
	}
	if now, _ := secretOf(sub.ID); now != rotated {
		t.Error("the refused rotation changed the secret")
	}
	if list := serve("GET", "/console/subscriptions", "").Body.String(); !strings.Contains(list, `id="end-previous-`+id+`"`) {
		t.Errorf("while the old secret signs, the list offers no way to stop it:\n%s", list)
	}
	if w := post(base+"/end-previous", url.Values{}); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/subscriptions?done=end-previous" {
		t.Errorf("end-previous: %d to %q, want 303 to the list", w.Code, w.Header().Get("Location"))
	}
	if _, previous := secretOf(sub.ID); previous != nil {
		t.Error("the old secret still signs after end-previous")
	}
	if w := post(base+"/rotate", url.Values{"keep": {"soon"}}); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "a duration such as 24h") {
		t.Errorf("a keep that is no duration: %d, want 400 saying what it takes:\n%s", w.Code, w.Body.String())
	}
	w = post(base+"/rotate", url.Values{"keep": {"0s"}})
	last, previous := secretOf(sub.ID)
	if w.Code != http.StatusSeeOther || last == rotated || previous != nil {
		t.Errorf("rotate keeping nothing: %d, old secret kept: %v; want 303, none kept", w.Code, previous != nil)
	}
	shows("rotate", `>`+last+`</pre>`, "The secret it replaced no longer signs anything")
	if w := serve("GET", "/console/subscriptions/999/secret", ""); w.Code != http.StatusNotFound {
		t.Errorf("the secret of no subscription: %d, want 404", w.Code)
	}
	for _, e := range logs.All() {
		if fields, _ := json.Marshal(e.ContextMap()); strings.Contains(e.Message+string(fields), "whsec_") {
			t.Errorf("the log has a secret: %s %s", e.Message, fields)
		}
	}

	const readToken = "read-token-0123456789"
	read := testConsole(Config{Pool: pool, ReadTokens: []string{readToken}})
	rs, ck := newSession(newCredential(roleRead, readToken), time.Now(), false)
	for _, path := range []string{base + "/edit", base + "/secret"} {
		if w := read("GET", path, "", ck); w.Code != http.StatusForbidden || strings.Contains(w.Body.String(), "whsec_") {
			t.Errorf("GET %s by a read-only session: %d, want 403", path, w.Code)
		}
	}
	for _, path := range []string{"/console/subscriptions", base + "/rotate", base + "/delete", base + "/edit"} {
		form := url.Values{"csrf": {rs.csrf()}, "url": {endpoint}, "types": {"message.created"}, "keep": {"0s"}, "confirm": {"yes"}}
		if w := read("POST", path, form.Encode(), ck); w.Code != http.StatusForbidden {
			t.Errorf("POST %s by a read-only session: %d, want 403", path, w.Code)
		}
	}
	if now, _ := secretOf(sub.ID); count() != 1 || now != last {
		t.Errorf("read-only sessions changed something: %d subscriptions", count())
	}
	if list := read("GET", "/console/subscriptions", "", ck).Body.String(); strings.Contains(list, `id="new-subscription"`) || strings.Contains(list, `id="rotate-`) {
		t.Errorf("a read-only session is offered the form or a rotation:\n%s", list)
	}
	// An endpoint behind basic auth has its password in the URL: the list, which
	// read-only sessions see, masks it; the admin's edit form keeps it, so that saving
	// the form does not replace it with the mask.
	const withPassword = "http://crm:hunter2-pw@127.0.0.1:9/hooks"
	if w := post(base+"/edit", url.Values{"url": {withPassword}, "types": {"message.created"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("a change to a URL with a password: %d\n%s", w.Code, w.Body.String())
	}
	for who, page := range map[string]string{
		"read-only list": read("GET", "/console/subscriptions", "", ck).Body.String(),
		"admin's list":   serve("GET", "/console/subscriptions", "").Body.String(),
		"delete page":    post(base+"/delete", url.Values{}).Body.String(),
	} {
		if strings.Contains(page, "hunter2-pw") || !strings.Contains(page, "http://crm:xxxxx@127.0.0.1:9/hooks") {
			t.Errorf("the %s shows the endpoint's password, or not the URL masked:\n%s", who, page)
		}
	}
	if edit := serve("GET", base+"/edit", "").Body.String(); !strings.Contains(edit, `value="`+withPassword+`"`) {
		t.Errorf("the admin's edit form does not keep the URL as stored:\n%s", edit)
	}

	if _, err := pool.Exec(ctx, `
WITH c AS (INSERT INTO changes (type, conversation_id, data) VALUES ('message.created', 1, '{}') RETURNING xid, seq, conversation_id)
INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state) SELECT $1, xid, seq, conversation_id, 'pending' FROM c`, sub.ID); err != nil {
		t.Fatal(err)
	}
	w = post(base+"/delete", url.Values{})
	if body := w.Body.String(); w.Code != http.StatusOK || !strings.Contains(body, "<strong>1</strong> delivery it is owed has not been made yet") || count() != 1 || strings.Contains(body, "whsec_") {
		t.Errorf("delete without confirming: %d, %d subscriptions; want 200 asking, saying what it drops, nothing deleted:\n%s", w.Code, count(), body)
	}
	if w := post(base+"/delete", url.Values{"confirm": {"yes"}}); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/subscriptions?done=delete" || count() != 0 {
		t.Errorf("delete confirmed: %d to %q, %d subscriptions; want 303 to the list, none left", w.Code, w.Header().Get("Location"), count())
	}
	if w := post(base+"/delete", url.Values{}); w.Code != http.StatusNotFound {
		t.Errorf("delete of a deleted subscription: %d, want 404", w.Code)
	}
}

// TestDeliveriesPages: a subscription's deliveries come a hundred a page, newest
// first, with an Older link that keeps the state filter, until the last page, which
// has none: every delivery is on exactly one page. Each says when: delivered at,
// next try at, or since (the give-up clock). A before that is no id is a 400.
func TestDeliveriesPages(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	serve, _ := adminConsole(Config{Pool: pool})
	var sub int64
	if err := pool.QueryRow(ctx, `INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq)
VALUES ('https://hooks.example/x', '{message.created}', 'whsec_x', '0', 0) RETURNING id`).Scan(&sub); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
WITH c AS (INSERT INTO changes (type, conversation_id, data) SELECT 'message.created', 1, '{}' FROM generate_series(1, 207) RETURNING xid, seq)
INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state, run_at, since, delivered_at)
SELECT $1, xid, seq, 1, CASE WHEN seq = 1 THEN 'delivered' WHEN seq = 2 THEN 'pending' ELSE 'dead' END,
       '2026-12-01 10:00:00Z', '2026-11-30 09:00:00Z', CASE WHEN seq = 1 THEN timestamptz '2026-12-01 11:00:00Z' END
FROM c ORDER BY seq`, sub); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("/console/subscriptions/%d/deliveries", sub)
	rowID := regexp.MustCompile(`<tr>\s*<td>(\d+)</td>`)
	older := regexp.MustCompile(`href="` + regexp.QuoteMeta(base) + `\?([^"]*)" id="older"`)
	walk := func(query string) (ids []string, bodies []string) {
		for pages := 0; query != "" || pages == 0; pages++ {
			w := serve("GET", base+"?"+query, "")
			body := html.UnescapeString(w.Body.String())
			if w.Code != 200 || pages > 5 {
				t.Fatalf("GET %s?%s = %d (page %d):\n%s", base, query, w.Code, pages+1, body)
			}
			bodies = append(bodies, body)
			for _, m := range rowID.FindAllStringSubmatch(body, -1) {
				ids = append(ids, m[1])
			}
			query = ""
			if m := older.FindStringSubmatch(body); m != nil {
				query = m[1]
			}
		}
		return ids, bodies
	}
	ids, bodies := walk("")
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	if len(bodies) != 3 || len(ids) != 207 || len(seen) != 207 || strings.Count(bodies[0], `<td class="state`) != 100 {
		t.Errorf("%d pages, %d rows, %d distinct; want 3 pages (100, 100, 7) of the 207 deliveries, each once", len(bodies), len(ids), len(seen))
	}
	if last := bodies[len(bodies)-1]; !strings.Contains(last, "delivered 2026-12-01 11:00:00Z") || !strings.Contains(last, "next try 2026-12-01 10:00:00Z") {
		t.Errorf("the last page does not say when the delivered one was made, or when the pending one is tried next:\n%s", last)
	}
	dead, deadPages := walk("state=dead")
	if len(dead) != 205 || len(deadPages) != 3 || strings.Contains(strings.Join(deadPages, ""), `state delivered`) || !strings.Contains(deadPages[2], "since 2026-11-30 09:00:00Z") {
		t.Errorf("the dead deliveries: %d rows on %d pages; want the 205 dead ones, on 3 pages kept to their state, each since when", len(dead), len(deadPages))
	}
	if w := serve("GET", base+"?before=soon", ""); w.Code != 400 || !strings.Contains(w.Body.String(), "before must be a delivery id") {
		t.Errorf("before=soon: %d, want 400 saying what it takes", w.Code)
	}
}

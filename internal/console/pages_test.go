package console

import (
	"context"
	"fmt"
	"html"
	"html/template"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
)

// TestPages: what the read-only pages show from the database. A thread reads oldest
// first, each message linked to its event (a missing event's page says retention
// may have deleted it); the subscriptions page counts each one's deliveries by state and a
// deliveries page keeps to its state (a misspelt one is a 400); every erasure
// receipt is listed with what it removed; the overview shows readiness and its
// parts, the retention settings (whole days as days), the ages of the oldest events
// kept and "none pending", and each lane's backlog once events wait; an event's
// trace id links to the trace; the failures page groups dead events only, the
// largest group first.
func TestPages(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	serve, _ := adminConsole(Config{Pool: pool,
		Health: func(context.Context) (bool, map[string]string) {
			return true, map[string]string{"the-writer": "writing-fine"}
		},
		Retention: 7 * 24 * time.Hour, DeadRetention: 36 * time.Hour, TraceURL: "https://traces.example/t/{trace_id}", Version: "v9.9.9-test (revision abc)"})
	page := func(path string) string {
		t.Helper()
		w := serve("GET", path, "")
		if w.Code != 200 {
			t.Errorf("GET %s = %d, want 200:\n%s", path, w.Code, w.Body.String())
		}
		return w.Body.String()
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	insert := func(sql string, args ...any) (id int64) {
		t.Helper()
		if err := pool.QueryRow(ctx, sql, args...).Scan(&id); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return id
	}
	event := insert(`INSERT INTO inbound_events (provider, external_id, payload, state, received_at, processed_at, traceparent)
VALUES ('generic', 'e1', '{}', 'processed', now() - interval '2 hours', now() - interval '2 hours', '00-` + traceID + `-00f067aa0ba902b7-01') RETURNING id`)
	insert(`INSERT INTO inbound_events (provider, external_id, payload, state, last_error, received_at)
SELECT 'generic', 'dead-' || i, '{}', 'dead', CASE WHEN i < 3 THEN 'the larger cause' ELSE 'the smaller cause' END, now() - interval '3 days'
FROM generate_series(1, 3) i RETURNING 0`)
	insert(`INSERT INTO inbound_events (provider, external_id, payload, state, last_error, attempts)
VALUES ('generic', 'retried', '{}', 'processing', 'a cause of an event being retried', 1) RETURNING 0`)
	conversation := insert(`INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', '+15550001111', '+15550002222', now()) RETURNING id`)
	insert(`INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'generic', m, $1, 'inbound', '+15550002222', '+15550001111', m || ' message', 'received', now() - (3 - i) * interval '1 minute', $2
FROM unnest(ARRAY['earlier', 'later']) WITH ORDINALITY AS t(m, i) RETURNING 0`, conversation, event)
	subscription := insert(`INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq)
VALUES ('https://hooks.example/x', '{message.created}', 'whsec_x', '0', 0) RETURNING id`)
	insert(`INSERT INTO changes (type, conversation_id, data) SELECT 'contact.erased', $1, '{}' FROM generate_series(1, 3) RETURNING 0`, conversation)
	insert(`INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state, last_error)
SELECT $1, xid, seq, conversation_id, CASE WHEN seq = min(seq) OVER () THEN 'delivered' ELSE 'dead' END, 'error of change ' || seq
FROM changes RETURNING 0`, subscription)
	firstErasure := insert(`INSERT INTO erasures (contact_hash, state, finished_at, counts)
VALUES ('hash-one', 'done', now(), '{"conversations": 1, "messages": 12, "events": 13, "pending_statuses": 2, "changes": 14}') RETURNING id`)
	secondErasure := insert(`INSERT INTO erasures (contact_hash, state, finished_at) VALUES ('hash-two', 'done', now()) RETURNING id`)

	thread := page(fmt.Sprintf("/console/conversations/%d", conversation))
	if e, l := strings.Index(thread, "earlier message"), strings.Index(thread, "later message"); e < 0 || l < e {
		t.Errorf("the thread shows the earlier message at %d and the later at %d, want oldest first", e, l)
	}
	if link := fmt.Sprintf(`<a href="/console/events/%d">event %d</a>`, event, event); strings.Count(thread, link) != 2 {
		t.Errorf("the thread does not link each message to its event (%s):\n%s", link, thread)
	}
	if strings.Contains(thread, `id="earlier"`) {
		t.Errorf("a thread shown whole says earlier messages are left out:\n%s", thread)
	}
	// Past its 200 latest messages, the page says the earlier ones are not shown.
	insert(`INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'generic', 'bulk-' || i, $1, 'inbound', '+15550002222', '+15550001111', 'bulk', 'received', now() - interval '90 seconds' + i * interval '1 millisecond', $2
FROM generate_series(1, 200) i RETURNING 0`, conversation, event)
	thread = page(fmt.Sprintf("/console/conversations/%d", conversation))
	if !strings.Contains(thread, `id="earlier"`) || !strings.Contains(thread, "later message") || strings.Contains(thread, "earlier message") || strings.Count(thread, "<li class=") != 200 {
		t.Errorf("a thread of 202 messages shows %d, want the latest 200 and a note that earlier ones are not shown:\n%s", strings.Count(thread, "<li class="), thread)
	}
	if w := serve("GET", "/console/events/999999", ""); w.Code != 404 || !strings.Contains(w.Body.String(), "Event 999999 is not stored") || !strings.Contains(w.Body.String(), "INBOX_RETENTION") {
		t.Errorf("an event retention deleted: %d, want 404 saying it may have been deleted:\n%s", w.Code, w.Body.String())
	}
	deliveries := fmt.Sprintf("/console/subscriptions/%d/deliveries", subscription)
	if body := page("/console/subscriptions"); !strings.Contains(body, deliveries+`?state=dead">dead 2</a>`) ||
		!strings.Contains(body, deliveries+`?state=delivered">delivered 1</a>`) {
		t.Errorf("the subscriptions page does not count the deliveries by state:\n%s", body)
	}
	if body := page(deliveries + "?state=dead"); strings.Count(body, `<td class="state dead">`) != 2 || strings.Contains(body, "delivered") {
		t.Errorf("the dead deliveries page shows others:\n%s", body)
	}
	if w := serve("GET", deliveries+"?state=delivred", ""); w.Code != 400 || !strings.Contains(w.Body.String(), "state must be one of") {
		t.Errorf("deliveries in a misspelt state: %d, want 400 naming the states:\n%s", w.Code, w.Body.String())
	}
	body := page("/console/erasures")
	row := func(id int64) int { return strings.Index(body, fmt.Sprintf("<td>%d</td><td>done</td>", id)) }
	if first, second := row(firstErasure), row(secondErasure); first < 0 || second < 0 || second > first {
		t.Errorf("the erasures page lists receipt %d at %d and %d at %d, want both, newest first:\n%s", firstErasure, first, secondErasure, second, body)
	}
	if !strings.Contains(body, "conversations 1, messages 12, events 13, parked statuses 2, changes 14") {
		t.Errorf("the erasures page does not show what an erasure removed:\n%s", body)
	}
	overview := page("/console/overview")
	for _, want := range []string{"none pending", `<span class="ok">Ready</span>`, `<span id="version">this page served by inboxd v9.9.9-test (revision abc)</span>`, "<td>the-writer</td><td>writing-fine</td>",
		"deleted after 7 days", "deleted after 36h0m0s", `<span id="oldest-processed">the oldest kept is 2h0m`, `<span id="oldest-dead">the oldest kept is 3 days old`,
		`<a href="/console/subscriptions">1</a>`, `<dd class="bad" id="dead-deliveries">2</dd>`} {
		if !strings.Contains(overview, want) {
			t.Errorf("the overview does not show %q:\n%s", want, overview)
		}
	}
	if body := page(fmt.Sprintf("/console/events/%d", event)); !strings.Contains(body, `<a href="https://traces.example/t/`+traceID+`" rel="noreferrer">`+traceID+`</a>`) {
		t.Errorf("the event page does not link its trace %s:\n%s", traceID, body)
	}
	failures := page("/console/failures")
	if larger, smaller := strings.Index(failures, "the larger cause"), strings.Index(failures, "the smaller cause"); larger < 0 || smaller < larger {
		t.Errorf("the failures page shows the larger group at %d, the smaller at %d; want the larger first", larger, smaller)
	}
	if strings.Contains(failures, "a cause of an event being retried") {
		t.Errorf("the failures page shows an event that is not dead")
	}

	// Lanes: none while nothing waits; then each lane with its backlog, busiest first.
	if strings.Contains(overview, `id="lanes"`) {
		t.Errorf("the overview shows lanes while nothing is pending:\n%s", overview)
	}
	insert(`INSERT INTO inbound_events (provider, external_id, payload, state, lane, run_at)
SELECT 'generic', 'waiting-' || i, '{}', 'pending', CASE WHEN i < 4 THEN 'generic/+15550001111' ELSE 'meta/123' END,
       CASE WHEN i < 4 THEN now() - interval '75 seconds' ELSE now() + interval '1 hour' END
FROM generate_series(1, 4) i RETURNING 0`)
	lanes := html.UnescapeString(page("/console/overview"))
	flood, quiet := strings.Index(lanes, "<td>generic/+15550001111</td><td>3</td><td>1m15s</td>"), strings.Index(lanes, "<td>meta/123</td><td>1</td><td>none due (retries later)</td>")
	if !strings.Contains(lanes, `id="lanes"`) || flood < 0 || quiet < flood {
		t.Errorf("the overview does not show the two lanes, busiest first, with how long each has waited:\n%s", lanes)
	}
}

// TestCharts: the overview's charts have one bar a minute for the last 30, the
// current minute last; a bar's height is its value against the largest (the dead
// ones inside the processed); a scale with nothing on it draws no bars.
func TestCharts(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 30, 25, 0, time.UTC)
	slots := minuteSlots([]processor.Minute{
		{Start: now.Truncate(time.Minute), Processed: 110, Dead: 10},
		{Start: now.Truncate(time.Minute).Add(-time.Minute), Processed: 50, Dead: 10},
	}, now, chartMinutes)
	if len(slots) != chartMinutes || !slots[chartMinutes-1].Start.Equal(now.Truncate(time.Minute)) || slots[chartMinutes-2].Processed != 50 {
		t.Fatalf("%d slots, the last at %v with %d processed; want %d, the current minute last", len(slots), slots[len(slots)-1].Start, slots[len(slots)-1].Processed, chartMinutes)
	}
	c := throughputChart(slots)
	if c.Max != "120/min (2/s)" {
		t.Errorf("the throughput scale's top is %q, want 120/min (2/s)", c.Max)
	}
	if small := throughputChart(minuteSlots([]processor.Minute{{Start: now.Truncate(time.Minute), Processed: 5}}, now, chartMinutes)); small.Max != "5/min" {
		t.Errorf("the throughput scale's top at 5 a minute is %q, want 5/min (not 0/s)", small.Max)
	}
	full := chartHeight - 4
	last, before := c.Bars[chartMinutes-1], c.Bars[chartMinutes-2]
	if last.H != full || last.InnerH != full*10/120 || before.H != full*60/120 || before.InnerH != full*10/120 || c.Bars[0].H != 0 {
		t.Errorf("bars %+v, %+v and %+v; want the full height, half, and none, with the dead inside", last, before, c.Bars[0])
	}
	for _, b := range throughputChart(minuteSlots(nil, now, chartMinutes)).Bars {
		if b.H != 0 || b.InnerH != 0 {
			t.Fatalf("an empty chart has a bar %+v", b)
		}
	}
}

// TestRenderFailureIs500: a page whose template fails on its data answers a 500 error
// page, not the part made before the failure under a 200.
func TestRenderFailureIs500(t *testing.T) {
	c := &console{cfg: Config{Log: zap.NewNop()}, pages: parsePages(), now: time.Now}
	c.pages["broken"] = template.Must(template.New("layout").Parse(`the start of the page {{.Data.Missing}}`))
	w := httptest.NewRecorder()
	c.render(w, httptest.NewRequest("GET", "/console/broken", nil), http.StatusOK, "broken", view{Data: struct{}{}})
	if body := w.Body.String(); w.Code != http.StatusInternalServerError || strings.Contains(body, "the start of the page") || !strings.Contains(body, "could not be shown") {
		t.Errorf("a page that fails to render: %d\n%s\nwant a 500 error page", w.Code, body)
	}
}

// TestConversationsPages: the conversations come fifty a page, latest activity
// first, with an Older link until the last page: each conversation is on exactly
// one page, also among conversations with the same last message time. A position
// that is not one is a 400. A contact search that finds nothing says how it looked.
func TestConversationsPages(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	serve, csrf := adminConsole(Config{Pool: pool})
	if _, err := pool.Exec(context.Background(), `
INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
SELECT 'generic', '+15550001111', '+1555100' || lpad(i::text, 4, '0'), timestamptz '2026-12-01 10:00:00Z' + (i / 3) * interval '1.25 second'
FROM generate_series(1, 120) i`); err != nil {
		t.Fatal(err)
	}
	rowID := regexp.MustCompile(`<td><a href="/console/conversations/(\d+)">`)
	older := regexp.MustCompile(`href="/console/conversations\?([^"]*)" id="older"`)
	seen := map[string]bool{}
	var pages, rows int
	for query := ""; pages == 0 || query != ""; pages++ {
		w := serve("GET", "/console/conversations?"+query, "")
		body := html.UnescapeString(w.Body.String())
		if w.Code != 200 || pages > 5 {
			t.Fatalf("GET /console/conversations?%s = %d (page %d):\n%s", query, w.Code, pages+1, body)
		}
		for _, m := range rowID.FindAllStringSubmatch(body, -1) {
			seen[m[1]] = true
			rows++
		}
		query = ""
		if m := older.FindStringSubmatch(body); m != nil {
			query = m[1]
		}
	}
	if pages != 3 || rows != 120 || len(seen) != 120 {
		t.Errorf("%d pages, %d rows, %d distinct; want 3 pages (50, 50, 20) of the 120 conversations, each once", pages, rows, len(seen))
	}
	if w := serve("GET", "/console/conversations?at=yesterday&id=3", ""); w.Code != 400 || !strings.Contains(w.Body.String(), "as the Older link gives them") {
		t.Errorf("a position that is not one: %d, want 400", w.Code)
	}
	// A contact search finds any spelling; one that finds nothing says how the
	// address was looked up (a number needs its country code).
	for contact, want := range map[string]string{
		"+1 (555) 100-0001": `<td><a href="/console/conversations/`,
		"5551000001":        `<td colspan="6" id="none">No conversations with that contact: looked up as +5551000001 (a phone number is matched in E.164, with its country code`,
	} {
		w := serve("POST", "/console/conversations", url.Values{"csrf": {csrf}, "contact": {contact}}.Encode())
		if body := html.UnescapeString(w.Body.String()); w.Code != 200 || !strings.Contains(body, want) {
			t.Errorf("the search for %q: %d, want %q:\n%s", contact, w.Code, want, body)
		}
	}
}

// TestUnknownQueryParameters: a page's address with a parameter the page does not
// read is a 400 naming it and what the page takes, so that a misspelt filter in a
// link (?stat=dead) is not answered with every event as if it had matched. The
// console's own links, and the addresses its forms redirect to, are taken.
func TestUnknownQueryParameters(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	serve, _ := adminConsole(Config{Pool: pool, Health: func(context.Context) (bool, map[string]string) { return true, nil }})
	var event, conversation, subscription int64
	if err := pool.QueryRow(ctx, `INSERT INTO inbound_events (provider, external_id, payload, state) VALUES ('generic', 'e1', '{}', 'dead') RETURNING id`).Scan(&event); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', '+15550001111', '+15550002222', now()) RETURNING id`).Scan(&conversation); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq)
VALUES ('https://hooks.example/x', '{message.created}', 'whsec_x', '0', 0) RETURNING id`).Scan(&subscription); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/console/events?stat=dead", `This page does not take &#34;stat&#34; in its address; it takes state, provider, external_id, from, to, before`},
		{"/console/events?state=dead&zz=1&aa=2", `&#34;aa&#34;, &#34;zz&#34;`},
		{"/console/overview?refresh=5", "it takes no parameters in its address"},
		{fmt.Sprintf("/console/subscriptions/%d/deliveries?sate=dead", subscription), "it takes state, before"},
		{"/console/failures?provider=meta", `does not take &#34;provider&#34;`},
	} {
		if w := serve("GET", c.path, ""); w.Code != 400 || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("GET %s = %d, want 400 saying %q:\n%s", c.path, w.Code, c.want, w.Body.String())
		}
	}
	// A personal field in the URL keeps its own answer: why it belongs in the form.
	if w := serve("GET", "/console/events?contact=%2B15550002222", ""); w.Code != 400 || !strings.Contains(w.Body.String(), "sent in the filter form") {
		t.Errorf("GET /console/events?contact= = %d, want 400 saying the form takes it:\n%s", w.Code, w.Body.String())
	}
	for _, path := range []string{
		"/console/events?state=dead&provider=generic&external_id=e1&from=2026-12-01T00:00&to=2026-12-31T00:00&before=100",
		fmt.Sprintf("/console/events/%d?requeued=1", event),
		"/console/conversations?at=2026-12-01T00:00:00Z&id=5",
		fmt.Sprintf("/console/conversations/%d", conversation),
		"/console/subscriptions?done=delete",
		fmt.Sprintf("/console/subscriptions/%d/deliveries?before=10&state=dead", subscription),
		fmt.Sprintf("/console/subscriptions/%d/secret?done=create", subscription),
		fmt.Sprintf("/console/subscriptions/%d/edit", subscription),
		"/console/erasures?done=erase",
		"/console/replays",
		"/console/live",
	} {
		if w := serve("GET", path, ""); w.Code != 200 {
			t.Errorf("GET %s = %d, want 200:\n%s", path, w.Code, w.Body.String())
		}
	}
}

// TestHeadIsAGet: every page answers HEAD as its GET (an uptime check of the
// console, `curl -I`): the same status and type, a redirect to the login without a
// session. The live page's stream answers a HEAD with its headers and ends, where a
// GET runs for as long as the browser stays.
func TestHeadIsAGet(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	cfg := Config{Pool: pool, Health: func(context.Context) (bool, map[string]string) { return true, nil }}
	serve, _ := adminConsole(cfg)
	for _, path := range []string{"/console/", "/console/overview", "/console/events?state=dead", "/console/events?stat=dead", "/console/events/999", "/console/live", "/console/static/console.css"} {
		get, head := serve("GET", path, ""), serve("HEAD", path, "")
		if head.Code != get.Code || head.Header().Get("Content-Type") != get.Header().Get("Content-Type") {
			t.Errorf("HEAD %s = %d %q, want the GET's %d %q", path, head.Code, head.Header().Get("Content-Type"), get.Code, get.Header().Get("Content-Type"))
		}
	}
	if w := testConsole(cfg)("HEAD", "/console/overview", "", nil); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/console/" {
		t.Errorf("HEAD /console/overview without a session = %d (Location %q), want 303 to the login", w.Code, w.Header().Get("Location"))
	}

	cfg.AdminTokens = []string{testAdminToken}
	cfg.Log = zap.NewNop()
	r := chi.NewRouter()
	r.Mount("/console", New(cfg))
	_, ck := adminSession()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // very wide: the stream's GET would last it out
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "HEAD", "/console/live/stream", nil)
	req.AddCookie(ck)
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	if ctx.Err() != nil || w.Code != 200 || w.Header().Get("Content-Type") != "text/event-stream" {
		t.Errorf("HEAD /console/live/stream = %d %q, ended by its deadline: %v; want 200 text/event-stream at once", w.Code, w.Header().Get("Content-Type"), ctx.Err() != nil)
	}
}

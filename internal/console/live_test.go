package console

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"inboxd/internal/feed"
	"inboxd/internal/pgtest"
)

// TestEventsFilter: the events page's filter trims the external id, pages before an
// event id, and refuses a time it cannot read or a state that does not exist.
func TestEventsFilter(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	serve, csrf := adminConsole(Config{Pool: pool})
	ids := insertEvents(t, pool, 3)
	link := func(id int64) string { return fmt.Sprintf(`<a href="/console/events/%d">`, id) }
	w := serve("GET", "/console/events?provider=generic&external_id=+ext-2+", "")
	if body := w.Body.String(); w.Code != 200 || !strings.Contains(body, link(ids[1])) || strings.Contains(body, link(ids[0])) {
		t.Errorf("events by the external id \" ext-2 \": %d, want event %d alone:\n%s", w.Code, ids[1], body)
	}
	// Each row shows the provider's id of its delivery, the one a provider's log names.
	if body := w.Body.String(); !strings.Contains(body, "<td>generic</td><td>ext-2</td>") {
		t.Errorf("the events list does not show each event's external id:\n%s", body)
	}
	w = serve("GET", fmt.Sprintf("/console/events?before=%d", ids[2]), "")
	if body := w.Body.String(); w.Code != 200 || strings.Contains(body, link(ids[2])) || !strings.Contains(body, link(ids[1])) {
		t.Errorf("events before %d: %d, want the earlier ones only:\n%s", ids[2], w.Code, body)
	}
	// A contact that matches nothing says how it was looked up.
	w = serve("POST", "/console/events", url.Values{"csrf": {csrf}, "contact": {"5552223333"}}.Encode())
	if body := html.UnescapeString(w.Body.String()); w.Code != 200 || !strings.Contains(body, "No events match: the contact was looked up as +5552223333 (a phone number is matched in E.164") {
		t.Errorf("events of a number without its country code: %d, want it to say how the number was looked up:\n%s", w.Code, body)
	}
	for query, want := range map[string]string{"to=yesterday": "to must be a date and time", "from=noon": "from must be a date and time",
		"state=lost": "state must be one of"} {
		if w := serve("GET", "/console/events?"+query, ""); w.Code != 400 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("events?%s: %d, want 400 saying %q:\n%s", query, w.Code, want, w.Body.String())
		}
	}
}

// TestLive: the live page starts its stream after the newest arrival it shows; the
// stream sends the arrivals after ?after=, or after Last-Event-ID when a reconnecting
// browser sends a later one, and outlives the server's write timeout.
func TestLive(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	_, ck := adminSession()
	ids := insertEvents(t, pool, 3)
	r := chi.NewRouter()
	r.Mount("/console", New(Config{Pool: pool, AdminTokens: []string{testAdminToken}, Log: zaptest.NewLogger(t)}))
	srv := httptest.NewUnstartedServer(r)
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	get := func(path string, header ...string) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
		req.AddCookie(ck)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	page := get("/console/live")
	var b strings.Builder
	if _, err := bufio.NewReader(page.Body).WriteTo(&b); err != nil || !strings.Contains(b.String(), fmt.Sprintf(`data-after="%d"`, ids[2])) {
		t.Errorf("the live page does not start after the newest arrival %d (%v):\n%s", ids[2], err, b.String())
	}
	// firstID reads a stream up to its first arrival's id.
	firstID := func(resp *http.Response) string {
		t.Helper()
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			if id, ok := strings.CutPrefix(lines.Text(), "id: "); ok {
				return id
			}
		}
		t.Fatalf("the stream ended before an arrival: %v", lines.Err())
		return ""
	}
	for _, tc := range []struct {
		query, lastEventID string
		want               int64
	}{
		{fmt.Sprint(ids[0]), "", ids[1]},
		{"0", fmt.Sprint(ids[1]), ids[2]},
		{fmt.Sprint(ids[1]), fmt.Sprint(ids[0]), ids[2]},
	} {
		if got := firstID(get("/console/live/stream?after="+tc.query, "Last-Event-ID", tc.lastEventID)); got != fmt.Sprint(tc.want) {
			t.Errorf("a stream after %s with Last-Event-ID %q starts at %s, want %d", tc.query, tc.lastEventID, got, tc.want)
		}
	}
	// A stream open past the write timeout still sends what arrives.
	stream := get(fmt.Sprintf("/console/live/stream?after=%d", ids[2]))
	time.Sleep(3 * srv.Config.WriteTimeout)
	later := insertEvents(t, pool, 1)
	if got := firstID(stream); got != fmt.Sprint(later[0]) {
		t.Errorf("a stream open past the write timeout sent %s, want the later arrival %d", got, later[0])
	}
}

// insertEvents stores n events of the generic provider, external ids ext-1, ext-2 …
// after those already stored, and returns their ids in order.
// TestLiveStreamReadsOnAfterAFullPage: a burst larger than the stream's page is sent
// whole at once, not a page per notification or recheck (neither comes here).
func TestLiveStreamReadsOnAfterAFullPage(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ids := insertEvents(t, pool, livePage+50)
	lines := openLiveStream(t, &console{cfg: Config{Pool: pool, Changes: feed.NewHub().Next, Log: zaptest.NewLogger(t)}, liveRecheck: time.Hour, liveHeartbeat: time.Hour})
	sent := 0
	for sent < len(ids) && lines.Scan() {
		if strings.HasPrefix(lines.Text(), "id: ") {
			sent++
		}
	}
	if sent != len(ids) {
		t.Errorf("the stream sent %d of the %d arrivals before its request's minute ended (%v)", sent, len(ids), lines.Err())
	}
}

// openLiveStream serves c's live stream and reads it from the start (after=0) for up
// to a minute, line by line.
func openLiveStream(t *testing.T, c *console) *bufio.Scanner {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(c.liveStream))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"?after=0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return bufio.NewScanner(resp.Body)
}

func insertEvents(t *testing.T, pool *pgxpool.Pool, n int) []int64 {
	t.Helper()
	var ids []int64
	err := pool.QueryRow(context.Background(), `
WITH e AS (
  INSERT INTO inbound_events (provider, external_id, payload, state)
  SELECT 'generic', 'ext-' || ((SELECT count(*) FROM inbound_events) + i), '{"type": "message"}', 'processed'
  FROM generate_series(1, $1::int) i
  RETURNING id)
SELECT array_agg(id ORDER BY id) FROM e`, n).Scan(&ids)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestLiveStreamWakesOnCommits: an idle stream sends a heartbeat (here after each
// read that found nothing), and reads again when the processor commits (Changes),
// not only at its recheck (here an hour).
func TestLiveStreamWakesOnCommits(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	hub := feed.NewHub()
	lines := openLiveStream(t, &console{cfg: Config{Pool: pool, Changes: hub.Next, Log: zaptest.NewLogger(t)}, liveRecheck: time.Hour, liveHeartbeat: time.Nanosecond})
	next := func(prefix string) string {
		t.Helper()
		for lines.Scan() {
			if rest, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return rest
			}
		}
		t.Fatalf("the stream ended before a line %q: %v", prefix, lines.Err())
		return ""
	}
	next(": heartbeat") // the first read is done: the arrival below comes after it
	ids := insertEvents(t, pool, 1)
	hub.Notify()
	if got := next("id: "); got != fmt.Sprint(ids[0]) {
		t.Errorf("after a commit the stream sent %s, want %d", got, ids[0])
	}
}

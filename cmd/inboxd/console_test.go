package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

const (
	consoleAdmin = "console-test-admin-token-0123456789"
	consoleRead  = "console-test-read-token-0123456789"
)

// chromium finds Debian's chromium, which the browser test needs: without it the
// test fails with how to install it (.ci/run installs it), except under -short, the
// quick local loop that leaves out what needs more than Postgres.
func chromium(t *testing.T) string {
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if testing.Short() {
		t.Skip("-short: the console's browser test needs chromium")
	}
	t.Fatal("no chromium binary: install Debian's chromium package (apt-get install chromium), as .ci/run does, or run go test -short")
	return ""
}

// screenshots is where the browser test writes its screenshots:
// INBOXD_CONSOLE_SCREENSHOTS (docs/console is where the current ones are kept), or
// the test's temporary directory.
func screenshots(t *testing.T) string {
	if d := os.Getenv("INBOXD_CONSOLE_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestConsoleInBrowser drives the console in headless Chromium against the running
// service: log in, see the overview, filter the events to a dead one, see its cause
// on the failures page, open it, replay it, watch it become processed, log out.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	exe := chromium(t)
	pool, dbURL := pgtest.NewPool(t)
	base, _ := startServe(t, map[string]string{"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_ADMIN_TOKENS": consoleAdmin, "INBOX_CONSOLE_READ_TOKENS": consoleRead,
		"INBOX_CONSOLE_TRACE_URL": "http://localhost:16686/trace/{trace_id}", "INBOX_DELIVERY_ALLOW_PRIVATE": "true"})
	// Something on every page: a subscriber (it gets the message below) and an erasure
	// of another contact.
	consumer := deliverytest.New(t)
	for _, args := range [][]string{
		{"subscriptions", "create", "--url", consumer.URL, "--types", "message.created,conversation.created", "--allow-private", "--database-url", dbURL},
		{"erase", "--contact", "+15559990000", "--database-url", dbURL},
	} {
		if err := run(context.Background(), args, func(string) string { return "" }, io.Discard, io.Discard); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	id := deadEvent(t, base, pool)
	dir := screenshots(t)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900), chromedp.Flag("disable-dev-shm-usage", true))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx)
	defer cancel()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			png, err := chromedp.FullScreenshot(100)(ctx, tg) // 100: PNG
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	browse := func(steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			// Say where the browser was and what it showed.
			diag, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			loc, _ := chromedp.Run(diag, chromedp.Location())
			body, _ := chromedp.Run(diag, chromedp.Text(chromedp.CSS("main")))
			t.Fatalf("%v; at %s, showing: %.600s", err, loc, body)
		}
	}
	// The first Run starts the browser; it must not run under a timeout of its own.
	browse(chromedp.Navigate(base+"/console"), chromedp.WaitVisible(chromedp.ID("token")), shot("login"))
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelTimeout()
	browse(chromedp.SendKeys(chromedp.ID("token"), consoleAdmin), chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("queue")), shot("overview"))
	browse(chromedp.Navigate(base+"/console/failures"), chromedp.WaitVisible(chromedp.CSS("main table")), shot("failures"))
	if f := text("main table tbody"); !strings.Contains(f, "simulated outage") {
		t.Errorf("failures page: %q, want the dead event's cause", f)
	}
	link := chromedp.CSS(`a[href="/console/events/` + id + `"]`)
	// The unfiltered page lists the event too: wait for the filtered answer (its select
	// has the state selected in the HTML) before clicking.
	deadFiltered := chromedp.CSS(`#state option[value="dead"][selected]`)
	browse(chromedp.Navigate(base+"/console/events"), chromedp.SetValue(chromedp.ID("state"), "dead"), chromedp.Submit(chromedp.ID("state")),
		chromedp.WaitReady(deadFiltered), chromedp.WaitVisible(link), shot("events"),
		chromedp.Click(link), chromedp.WaitVisible(chromedp.ID("event-state")), shot("event"))
	if state := text("#event-state"); state != "dead" {
		t.Fatalf("the event page shows %q, want dead", state)
	}
	browse(chromedp.Click(chromedp.ID("replay")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	pgtest.Eventually(t, "the replayed event shown processed", time.Minute, func() (bool, error) {
		err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("event-state")))
		return err == nil && text("#event-state") == "processed", err
	})
	browse(shot("event-replayed"))
	// A bulk replay: three dead events found by their payload's text, confirmed with
	// their count, replayed in the background, watched to the end.
	var bulk []string
	for i := range 3 {
		bulk = append(bulk, postEvent(t, base, fmt.Sprintf("evt-bulk-%d", i)))
	}
	settle(t, pool)
	if _, err := pool.Exec(context.Background(), `UPDATE inbound_events SET state = 'dead', processed_at = NULL,
  last_error = 'simulated outage: the provider answered 503' WHERE external_id LIKE 'evt-bulk-%'`); err != nil {
		t.Fatal(err)
	}
	browse(chromedp.Navigate(base+"/console/events"), chromedp.SetValue(chromedp.ID("state"), "dead"),
		chromedp.SendKeys(chromedp.ID("text"), "evt-bulk"), chromedp.Submit(chromedp.ID("text")),
		chromedp.WaitReady(deadFiltered), chromedp.WaitVisible(chromedp.CSS(`a[href="/console/events/`+bulk[2]+`"]`)), shot("events-filtered"),
		chromedp.Click(chromedp.ID("replay-all")), chromedp.WaitVisible(chromedp.ID("replay-count")), shot("replay-preview"))
	if n := text("#replay-count"); n != "3" {
		t.Errorf("the bulk replay's confirmation counts %s events, want 3", n)
	}
	browse(chromedp.Click(chromedp.ID("replay-confirm")), chromedp.WaitVisible(chromedp.ID("replay-state")))
	pgtest.Eventually(t, "the bulk replay shown done", time.Minute, func() (bool, error) {
		err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("replay-state")))
		return err == nil && text("#replay-state") == "done", err
	})
	browse(shot("replay"))
	if n := text("#replay-requeued"); n != "3" {
		t.Errorf("the bulk replay requeued %s events, want 3", n)
	}
	settle(t, pool)
	var dead int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound_events WHERE external_id LIKE 'evt-bulk-%' AND state <> 'processed'`).Scan(&dead); err != nil || dead != 0 {
		t.Errorf("after the bulk replay %d of its events are not processed (%v)", dead, err)
	}
	browse(chromedp.Navigate(base+"/console/replays"), chromedp.WaitVisible(chromedp.CSS("main table")), shot("replays"))

	// Conversations: a contact found by any spelling (sent in the body, not the URL),
	// then the thread; the subscriptions and erasures pages answer.
	browse(chromedp.Navigate(base+"/console/conversations"), chromedp.SendKeys(chromedp.ID("contact"), "+1 (555) 222-3333"),
		// The unfiltered page lists the conversation too: wait for the answer to the search.
		chromedp.Submit(chromedp.ID("contact")), chromedp.WaitVisible(chromedp.ID("found")), shot("conversations"),
		chromedp.Click(chromedp.CSS(`a[href="/console/conversations/1"]`)), chromedp.WaitVisible(chromedp.CSS(".thread")), shot("conversation"))
	if thread := text(".thread"); !strings.Contains(thread, "hello from the console test") {
		t.Errorf("thread: %q", thread)
	}
	// The path and query, not the host: the server's random port may hold "555".
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || strings.Contains(strings.TrimPrefix(loc, base), "555") {
		t.Errorf("the contact is in the URL %q (%v)", loc, err)
	}
	pgtest.Eventually(t, "the subscriber's deliveries", 30*time.Second, func() (bool, error) { return len(consumer.Delivered()) == 5, nil })
	// A ping from the subscriptions page: the endpoint's answer is shown.
	browse(chromedp.Navigate(base+"/console/subscriptions"), chromedp.WaitVisible(chromedp.ID("ping-1")),
		chromedp.Click(chromedp.ID("ping-1")), chromedp.WaitVisible(chromedp.CSS("p.flash")), shot("subscriptions"))
	if flash := text("p.flash"); !strings.Contains(flash, "Ping of subscription 1: the endpoint answered 204") {
		t.Errorf("after Ping the page says %q, want the endpoint's 204", flash)
	}
	browse(chromedp.Click(chromedp.CSS(`a[href="/console/subscriptions/1/deliveries"]`)), chromedp.WaitVisible(chromedp.ID("deliveries")), shot("deliveries"))
	// The conversation and its four messages (the first event's and the bulk replay's).
	if ds := text("#deliveries tbody"); strings.Count(ds, "\tdelivered\t") != 5 {
		t.Errorf("deliveries page: %q, want the five deliveries", ds)
	}
	// A subscription made from the form: the secret the page shows once is the one
	// its deliveries are signed with (a ping from the list verifies with it).
	second := deliverytest.New(t)
	browse(chromedp.Navigate(base+"/console/subscriptions"), chromedp.WaitVisible(chromedp.ID("new-subscription")),
		chromedp.SendKeys(chromedp.ID("url"), second.URL),
		chromedp.Click(chromedp.CSS(`#new-subscription input[value="conversation.created"]`)),
		chromedp.Click(chromedp.CSS(`#new-subscription input[value="message.status_changed"]`)),
		chromedp.Click(chromedp.ID("create-subscription")), chromedp.WaitVisible(chromedp.ID("secret")), shot("subscription-created"))
	secret := strings.TrimSpace(text("#secret"))
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("the created subscription's page shows %q, want its secret", secret)
	}
	second.SetSecret(secret)
	browse(chromedp.Navigate(base+"/console/subscriptions"), chromedp.WaitVisible(chromedp.ID("ping-2")),
		chromedp.Click(chromedp.ID("ping-2")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	if got := second.Got(); len(got) != 1 || !got[0].Verified {
		t.Errorf("the ping of the subscription made in the console: %+v, want one request signed with the secret shown", got)
	}
	if types := text("#subscriptions tbody tr:nth-child(2) td:nth-child(4)"); types != "contact.erased, message.created" {
		t.Errorf("the subscription made in the console has types %q, want the ticked one and contact.erased", types)
	}
	browse(chromedp.Click(chromedp.ID("edit-2")), chromedp.WaitVisible(chromedp.ID("edit-subscription")),
		chromedp.Click(chromedp.CSS(`#edit-subscription input[value="conversation.created"]`)),
		chromedp.Click(chromedp.ID("save-subscription")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	if types := text("#subscriptions tbody tr:nth-child(2) td:nth-child(4)"); types != "contact.erased, conversation.created, message.created" {
		t.Errorf("after ticking conversation.created on its change page, the subscription has types %q", types)
	}
	browse(chromedp.Navigate(base+"/console/erasures"), chromedp.WaitVisible(chromedp.ID("receipts")))
	if es := text("#receipts tbody"); !strings.Contains(es, "done") || !strings.Contains(es, "nothing") {
		t.Errorf("erasures page: %q, want the receipt with what it removed", es)
	}

	// Live: an arrival appears by itself; paused, the next one is held back and counted.
	browse(chromedp.Navigate(base+"/console/live"), chromedp.WaitVisible(chromedp.ID("pause")))
	liveID := postEvent(t, base, "evt-live-1")
	browse(chromedp.WaitVisible(chromedp.CSS(`#arrivals a[href="/console/events/`+liveID+`"]`)), shot("live"),
		chromedp.Click(chromedp.ID("pause")))
	heldID := postEvent(t, base, "evt-live-2")
	pgtest.Eventually(t, "the paused page to count the held arrival", 30*time.Second, func() (bool, error) {
		return strings.Contains(text("#pause"), "1 new"), nil
	})
	held := chromedp.CSS(`#arrivals a[href="/console/events/` + heldID + `"]`)
	if n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#arrivals a[href="/console/events/`+heldID+`"]`), chromedp.AtLeast(0))); err != nil || len(n) != 0 {
		t.Errorf("while paused the arrival is shown (%d nodes, %v)", len(n), err)
	}
	browse(chromedp.Click(chromedp.ID("pause")), chromedp.WaitVisible(held))
	// The overview's charts, once the processor's rollup has the minute.
	pgtest.Eventually(t, "the rollup to have the minute", time.Minute, func() (bool, error) {
		var n int64
		err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(processed), 0) FROM queue_minutes`).Scan(&n)
		return n > 0, err
	})
	browse(chromedp.Navigate(base+"/console/overview"), chromedp.WaitVisible(chromedp.ID("throughput")), shot("overview"))
	if n, err := chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(`#throughput rect.outer[height]:not([height="0"])`), chromedp.AtLeast(0))); err != nil || len(n) == 0 {
		t.Errorf("the throughput chart has no bar (%d, %v)", len(n), err)
	}
	// An erasure from the conversation's page: what it would remove first, then the
	// receipt, and the contact's conversation gone; no address shows the contact.
	browse(chromedp.Navigate(base+"/console/conversations/1"), chromedp.WaitVisible(chromedp.ID("erase-contact")),
		chromedp.Click(chromedp.ID("erase-contact")), chromedp.WaitVisible(chromedp.ID("erase-confirm")), shot("erasure-preview"))
	if held := text("#held"); !strings.HasPrefix(held, "conversations 1, messages ") {
		t.Errorf("the erasure's preview says %q is held, want the conversation and its messages", held)
	}
	browse(chromedp.Click(chromedp.ID("erase-confirm")), chromedp.WaitVisible(chromedp.CSS("p.flash")))
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || strings.Contains(strings.TrimPrefix(loc, base), "555") {
		t.Errorf("the contact is in the URL %q (%v)", loc, err)
	}
	pgtest.Eventually(t, "the erasure to finish", time.Minute, func() (bool, error) {
		var running int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM erasures WHERE state <> 'done'`).Scan(&running)
		return running == 0, err
	})
	var left int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM conversations WHERE contact_address = '+15552223333'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("after the erasure %d of the contact's conversations are left (%v)", left, err)
	}
	browse(chromedp.Navigate(base+"/console/erasures"), chromedp.WaitVisible(chromedp.ID("receipts")), shot("erasures"))
	if r := text("#receipts tbody tr:first-child"); !strings.Contains(r, "done") || !strings.Contains(r, "conversations 1") {
		t.Errorf("the newest receipt reads %q, want done, with the conversation it removed", r)
	}
	browse(chromedp.Click(chromedp.CSS(`header button[type="submit"]`)), chromedp.WaitVisible(chromedp.ID("token")))
	if title, err := chromedp.Run(ctx, chromedp.Title()); err != nil || !strings.HasPrefix(title, "Log in") {
		t.Errorf("after logging out the page is %q (%v), want the login page", title, err)
	}
	browse(chromedp.Navigate(base+"/console/overview"), chromedp.WaitVisible(chromedp.ID("token"))) // logged out: sent to log in
}

// deadEvent stores a message and makes its event dead, as a provider outage would
// have, and returns its id.
func deadEvent(t *testing.T, base string, pool *pgxpool.Pool) string {
	t.Helper()
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-console","channel":"+15550001111","contact":"+15552223333","text":"hello from the console test"}}`
	if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-console", []byte(body), time.Now())); status != 200 {
		t.Fatalf("webhook: %d %s", status, b)
	}
	settle(t, pool)
	var id int64
	err := pool.QueryRow(context.Background(), `UPDATE inbound_events SET state = 'dead', processed_at = NULL, attempts = 2,
  last_error = 'simulated outage: the provider answered 503',
  errors = '[{"attempt": 1, "at": "2026-11-25T10:00:01Z", "error": "timeout: the provider did not answer"},
             {"attempt": 2, "at": "2026-11-25T10:00:03Z", "error": "simulated outage: the provider answered 503"}]'
  WHERE external_id = 'evt-console' RETURNING id`).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	return strconv.FormatInt(id, 10)
}

// postEvent posts a message event and returns its id.
func postEvent(t *testing.T, base, externalID string) string {
	t.Helper()
	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"` + externalID + `","channel":"+15550001111","contact":"+15552223333","text":"live"}}`
	status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, externalID, []byte(body), time.Now()))
	if status != 200 {
		t.Fatalf("webhook: %d %s", status, b)
	}
	var ack struct{ Events []struct{ ID int64 } }
	if err := json.Unmarshal([]byte(b), &ack); err != nil || len(ack.Events) != 1 {
		t.Fatalf("webhook answer %s", b)
	}
	return strconv.FormatInt(ack.Events[0].ID, 10)
}

// consoleClient logs in with token and returns a client holding the session.
func consoleClient(t *testing.T, base, token string) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp, err := c.PostForm(base+"/console/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/console/overview" {
		t.Fatalf("login with %q ended at %s (%s)", token[:8], resp.Request.URL, resp.Status)
	}
	return c
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// page GETs a console page and returns its status, body and the CSRF token it shows.
func page(t *testing.T, c *http.Client, u string) (int, string, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("%s: Content-Security-Policy %q", u, csp)
	}
	m := csrfField.FindStringSubmatch(string(b))
	if m == nil {
		return resp.StatusCode, string(b), ""
	}
	return resp.StatusCode, string(b), m[1]
}

// post POSTs a console form and returns the status and body (after redirects).
func post(t *testing.T, c *http.Client, u string, form url.Values) (int, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestConsoleRoles: the session cookie is HttpOnly and SameSite=Strict; a read-only
// session sees the event but no replay button, and its replay is refused (403) even
// with its CSRF token, as are its bulk replays and its cancelling of one; an admin's
// replay without the CSRF token is refused (403) and changes nothing; a wrong token
// does not log in; a page without a session sends to the login page.
func TestConsoleRoles(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	base, _ := startServe(t, map[string]string{"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_ADMIN_TOKENS": consoleAdmin, "INBOX_CONSOLE_READ_TOKENS": consoleRead})
	id := deadEvent(t, base, pool)
	eventURL := base + "/console/events/" + id

	resp, err := http.PostForm(base+"/console/login", url.Values{"token": {consoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The redirect's answer carried the cookie; ask for it without following.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.PostForm(base+"/console/login", url.Values{"token": {consoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Header.Get("Set-Cookie"); !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Strict") {
		t.Errorf("session cookie %q, want HttpOnly and SameSite=Strict", ck)
	}
	resp, err = noFollow.PostForm(base+"/console/login", url.Values{"token": {"not-a-token"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Set-Cookie") != "" {
		t.Errorf("a wrong token: %s, cookie %q; want 401 and no session", resp.Status, resp.Header.Get("Set-Cookie"))
	}
	resp, err = noFollow.Get(eventURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Errorf("a page without a session: %s to %q, want 303 to the login page", resp.Status, resp.Header.Get("Location"))
	}

	reader := consoleClient(t, base, consoleRead)
	status, body, csrf := page(t, reader, eventURL)
	if status != 200 || !strings.Contains(body, "simulated outage") || !strings.Contains(body, "the provider did not answer") || strings.Contains(body, `id="replay"`) || csrf == "" {
		t.Fatalf("read-only event page: %d, replay button shown: %v", status, strings.Contains(body, `id="replay"`))
	}
	resp, err = reader.PostForm(eventURL+"/replay", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only replay: %s, want 403", resp.Status)
	}

	admin := consoleClient(t, base, consoleAdmin)
	resp, err = admin.PostForm(eventURL+"/replay", url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("replay without the CSRF token: %s, want 403", resp.Status)
	}
	var state string
	if err := pool.QueryRow(context.Background(), `SELECT state FROM inbound_events WHERE id = $1`, id).Scan(&state); err != nil || state != "dead" {
		t.Errorf("after the refused replays the event is %q (%v), want dead", state, err)
	}
	if status, body, _ := page(t, admin, base+"/console/events?provider=generic&external_id=evt-console"); status != 200 || !strings.Contains(body, `href="/console/events/`+id+`"`) {
		t.Errorf("events by external id: %d, the event listed: %v", status, strings.Contains(body, `href="/console/events/`+id+`"`))
	}
	if status, body, _ := page(t, admin, base+"/console/events?external_id=evt-console"); status != 400 || !strings.Contains(body, "choose the provider too") {
		t.Errorf("an external id without a provider: %d, want 400 saying what to do", status)
	}
	if status, body, _ := page(t, admin, base+"/console/events?before=0"); status != 400 || !strings.Contains(body, "before must be an event id") {
		t.Errorf("a page before event 0: %d, want 400 saying what before is", status)
	}
	if status, body, _ := page(t, admin, base+"/console/subscriptions/999999/deliveries"); status != 404 || !strings.Contains(body, "subscription 999999: not found; the Subscriptions page lists them") {
		t.Errorf("a missing subscription's deliveries: %d, want 404 saying where the list is", status)
	}
	// The filters a URL must not carry are POSTed: a contact (in any spelling),
	// payload text, a JSON path; a bad path is a 400 that says so.
	_, _, csrf = page(t, admin, base+"/console/events")
	for _, tc := range []struct {
		form   url.Values
		status int
		listed bool
	}{
		{url.Values{"contact": {"+1 (555) 222-3333"}}, 200, true},
		{url.Values{"contact": {"+15550000000"}}, 200, false},
		{url.Values{"text": {"HELLO from the console"}, "state": {"dead"}}, 200, true},
		{url.Values{"path": {`$.data ? (@.text like_regex "console")`}}, 200, true},
		{url.Values{"path": {`$.data ==`}}, 400, false},
		{url.Values{"from": {time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")}}, 200, true},
		{url.Values{"to": {time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")}}, 200, false},
		{url.Values{"from": {"yesterday"}}, 400, false},
	} {
		tc.form.Set("csrf", csrf)
		status, body := post(t, admin, base+"/console/events", tc.form)
		if status != tc.status || strings.Contains(body, `href="/console/events/`+id+`"`) != tc.listed {
			t.Errorf("events filtered by %v: %d, listed: %v; want %d, %v", tc.form, status, !tc.listed, tc.status, tc.listed)
		}
	}
	// A bulk replay: a read-only session may not ask; a state that cannot be replayed
	// is refused with what to do; the admin's confirmation shows the count.
	_, _, rcsrf := page(t, reader, base+"/console/events")
	if status, _ := post(t, reader, base+"/console/replays/preview", url.Values{"csrf": {rcsrf}, "state": {"dead"}}); status != http.StatusForbidden {
		t.Errorf("read-only bulk replay: %d, want 403", status)
	}
	if status, _ := post(t, reader, base+"/console/replays", url.Values{"csrf": {rcsrf}, "state": {"dead"}, "up_to": {"100"}, "total": {"1"}, "rate": {"10"}}); status != http.StatusForbidden {
		t.Errorf("read-only bulk replay start: %d, want 403", status)
	}
	if status, _ := post(t, reader, base+"/console/replays/1/cancel", url.Values{"csrf": {rcsrf}}); status != http.StatusForbidden {
		t.Errorf("read-only replay cancel: %d, want 403", status)
	}
	if status, body := post(t, admin, base+"/console/replays/preview", url.Values{"csrf": {csrf}, "state": {"pending"}}); status != 400 || !strings.Contains(body, "dead or processed") {
		t.Errorf("bulk replay of pending events: %d, want 400 saying which states", status)
	}
	if status, body := post(t, admin, base+"/console/replays/preview", url.Values{"csrf": {csrf}, "state": {"dead"}}); status != 200 || !strings.Contains(body, `<strong id="replay-count">1</strong>`) {
		t.Errorf("bulk replay confirmation: %d, count shown: %v", status, strings.Contains(body, `id="replay-count">1<`))
	}
	// By contact, in any spelling: the count once failed for a contact filter.
	if status, body := post(t, admin, base+"/console/replays/preview", url.Values{"csrf": {csrf}, "state": {"dead"}, "contact": {"+1 (555) 222-3333"}}); status != 200 || !strings.Contains(body, `<strong id="replay-count">1</strong>`) {
		t.Errorf("bulk replay confirmation of a contact's dead events: %d, count shown: %v", status, strings.Contains(body, `id="replay-count">1<`))
	}
	// The overview's retention status names the dead event's age.
	if status, body, _ := page(t, admin, base+"/console/overview"); status != 200 || !strings.Contains(body, `id="oldest-dead">the oldest kept is`) {
		t.Errorf("overview: %d, the oldest dead event's age shown: %v", status, strings.Contains(body, `id="oldest-dead">the oldest kept is`))
	}
	// A failures group: listed and replayed by its exact error; a read-only session
	// gets the list but no replay button.
	if status, body, _ := page(t, reader, base+"/console/failures"); status != 200 || strings.Contains(body, "group-replay") {
		t.Errorf("read-only failures page: %d, replay button shown: %v", status, strings.Contains(body, "group-replay"))
	}
	if status, body, _ := page(t, admin, base+"/console/failures"); status != 200 || !strings.Contains(body, "group-replay") {
		t.Errorf("admin failures page: %d, replay button shown: %v", status, strings.Contains(body, "group-replay"))
	}
	group := url.Values{"csrf": {csrf}, "state": {"dead"}, "provider": {"generic"}, "error": {"simulated outage: the provider answered 503"}}
	if status, body := post(t, admin, base+"/console/events", group); status != 200 || !strings.Contains(body, `href="/console/events/`+id+`"`) {
		t.Errorf("the failures group's events: %d, listed: %v", status, strings.Contains(body, `href="/console/events/`+id+`"`))
	}
	if status, body := post(t, admin, base+"/console/replays/preview", group); status != 200 || !strings.Contains(body, `<strong id="replay-count">1</strong>`) {
		t.Errorf("the failures group's replay confirmation: %d, counts 1: %v", status, strings.Contains(body, `id="replay-count">1<`))
	}
	group.Set("error", "") // the group of those without an error: not this one
	if status, body := post(t, admin, base+"/console/events", group); status != 200 || strings.Contains(body, `href="/console/events/`+id+`"`) {
		t.Errorf("the group of dead events without an error: %d, lists one with an error: %v", status, strings.Contains(body, `href="/console/events/`+id+`"`))
	}
	// A hand-made URL with a filter that must stay out of URLs is refused, saying why.
	for _, path := range []string{"/console/events?contact=%2B15550000000", "/console/events?state=dead&text=hi", "/console/conversations?contact=%2B15552223333"} {
		if status, body, _ := page(t, admin, base+path); status != 400 || !strings.Contains(body, "never in a URL") {
			t.Errorf("GET %s: %d, want 400 saying it goes in the form", path, status)
		}
	}
	group.Set("error", "another cause")
	if status, body := post(t, admin, base+"/console/replays/preview", group); status != 200 || !strings.Contains(body, "No event matches") {
		t.Errorf("a replay of another cause: %d, says none match: %v", status, strings.Contains(body, "No event matches"))
	}
	_, _, csrf = page(t, admin, eventURL)
	resp, err = admin.PostForm(eventURL+"/replay", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Request.URL.RawQuery, "requeued=1") {
		t.Errorf("admin replay with the CSRF token: %s at %s", resp.Status, resp.Request.URL)
	}
	settle(t, pool)
}

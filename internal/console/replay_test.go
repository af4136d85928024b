package console

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"inboxd/internal/pgtest"
	"inboxd/internal/replay"
)

// TestBulkReplayPages: the events page offers a bulk replay only for a state that can
// be replayed; the confirmation counts the matching events and pins the last event
// id; an incomplete confirmation or a bad rate is refused and starts nothing; a
// confirmed replay wakes the runner and leads to its page, which shows its progress
// and reloads itself while it runs; the list shows every job; a missing job is not
// found; a cancel ends the job; a filter that matches more than one job takes is
// refused before any confirm button.
func TestBulkReplayPages(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	woken := 0
	serve, csrf := adminConsole(Config{Pool: pool, WakeReplays: func() { woken++ }})
	get := func(path string) (int, string) {
		w := serve("GET", path, "")
		return w.Code, w.Body.String()
	}
	post := func(path string, form url.Values) *httptest.ResponseRecorder {
		form.Set("csrf", csrf)
		return serve("POST", path, form.Encode())
	}
	var upTo int64
	if err := pool.QueryRow(ctx, `
WITH e AS (
  INSERT INTO inbound_events (provider, external_id, payload, state)
  VALUES ('generic', 'a', '{}', 'dead'), ('generic', 'b', '{}', 'dead'), ('twilio', 'c', '{}', 'dead'), ('generic', 'd', '{}', 'pending')
  RETURNING id)
SELECT max(id) FROM e`).Scan(&upTo); err != nil {
		t.Fatal(err)
	}

	if status, body := get("/console/events?state=dead"); status != 200 || !strings.Contains(body, `id="replay-all"`) {
		t.Errorf("dead events: %d, bulk replay offered: %v; want 200, offered", status, strings.Contains(body, `id="replay-all"`))
	}
	if status, body := get("/console/events?state=pending"); status != 200 || strings.Contains(body, `id="replay-all"`) {
		t.Errorf("pending events: %d, bulk replay offered: %v; want 200, not offered", status, strings.Contains(body, `id="replay-all"`))
	}

	w := post("/console/replays/preview", url.Values{"state": {"dead"}})
	if body := w.Body.String(); w.Code != 200 || !strings.Contains(body, `<strong id="replay-count">3</strong>`) ||
		!strings.Contains(body, fmt.Sprintf(`name="up_to" value="%d"`, upTo)) || !strings.Contains(body, `id="replay-confirm"`) {
		t.Errorf("confirmation of the dead events: %d, want 200 counting 3, up to event %d, with a confirm button:\n%s", w.Code, upTo, body)
	}

	confirm := func(upTo, total, rate string) url.Values {
		return url.Values{"state": {"dead"}, "up_to": {upTo}, "total": {total}, "rate": {rate}}
	}
	last := strconv.FormatInt(upTo, 10)
	for _, tc := range []struct {
		form url.Values
		want string
	}{
		{confirm("-1", "3", "10"), "confirmation is incomplete"},
		{confirm(last, "-1", "10"), "confirmation is incomplete"},
		{confirm(last, "", "10"), "confirmation is incomplete"},
		{confirm("", "3", "10"), "confirmation is incomplete"},
		{confirm(last, "3", "fast"), "The rate must be a whole number"},
		{confirm(last, "3", "0"), "the rate is from 1 to"},
		{url.Values{"state": {"pending"}, "up_to": {last}, "total": {"1"}, "rate": {"10"}}, "dead or processed"},
	} {
		if w := post("/console/replays", tc.form); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("start %v: %d, want 400 saying %q:\n%s", tc.form, w.Code, tc.want, w.Body.String())
		}
	}
	var jobs int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM replays`).Scan(&jobs); err != nil || jobs != 0 {
		t.Fatalf("after refused starts: %d jobs (%v), want none", jobs, err)
	}

	start := func(form url.Values) int64 {
		t.Helper()
		w := post("/console/replays", form)
		prefix := "/console/replays/"
		loc := w.Header().Get("Location")
		id, err := strconv.ParseInt(strings.TrimPrefix(loc, prefix), 10, 64)
		if w.Code != http.StatusSeeOther || !strings.HasPrefix(loc, prefix) || err != nil {
			t.Fatalf("start %v: %d to %q, want 303 to the job's page", form, w.Code, loc)
		}
		return id
	}
	first := start(confirm(last, "3", "10"))
	if woken != 1 {
		t.Errorf("the runner was woken %d times by a start, want once", woken)
	}
	second := start(url.Values{"state": {"dead"}, "provider": {"twilio"}, "up_to": {last}, "total": {"1"}, "rate": {"10"}})

	if _, err := pool.Exec(ctx, `UPDATE replays SET requeued = 1 WHERE id = $1`, first); err != nil {
		t.Fatal(err)
	}
	page := "/console/replays/" + strconv.FormatInt(first, 10)
	if status, body := get(page); status != 200 || !strings.Contains(body, `id="replay-state">running<`) ||
		!strings.Contains(body, `<progress id="replay-progress" max="100" value="33">`) || !strings.Contains(body, `<meta http-equiv="refresh" content="2">`) {
		t.Errorf("running job, 1 of 3 requeued: %d, want 200, running, 33%%, reloading:\n%s", status, body)
	}
	status, body := get("/console/replays")
	for _, id := range []int64{first, second} {
		if status != 200 || !strings.Contains(body, fmt.Sprintf(`<a href="/console/replays/%d">`, id)) {
			t.Errorf("the replays list: %d, lists job %d: %v", status, id, strings.Contains(body, fmt.Sprintf(`/console/replays/%d"`, id)))
		}
	}
	if status, body := get("/console/replays/999999"); status != http.StatusNotFound {
		t.Errorf("a missing job: %d, want 404:\n%s", status, body)
	}
	// A running job whose total is 0 (none is started so; a row can be edited) still
	// has a page.
	if _, err := pool.Exec(ctx, `UPDATE replays SET total = 0 WHERE id = $1`, second); err != nil {
		t.Fatal(err)
	}
	if status, body := get("/console/replays/" + strconv.FormatInt(second, 10)); status != 200 {
		t.Errorf("a running job of 0 events: %d, want 200:\n%s", status, body)
	}

	if w := post(page+"/cancel", url.Values{}); w.Code != http.StatusSeeOther || w.Header().Get("Location") != page {
		t.Errorf("cancel: %d to %q, want 303 to %s", w.Code, w.Header().Get("Location"), page)
	}
	if j, err := replay.Get(ctx, pool, first); err != nil || j.State != "cancelled" {
		t.Errorf("after the cancel the job is %q (%v), want cancelled", j.State, err)
	}
	if status, body := get(page); status != 200 || !strings.Contains(body, `id="replay-state">cancelled<`) || strings.Contains(body, `http-equiv="refresh"`) ||
		!strings.Contains(body, `value="100"`) {
		t.Errorf("cancelled job: %d, want 200, cancelled, not reloading, progress full:\n%s", status, body)
	}

	// More events than one job takes: the confirmation says so and offers no button.
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state)
SELECT 'generic', 'many-' || i, '{}', 'dead' FROM generate_series(1, $1::int) i`, replay.MaxEvents); err != nil {
		t.Fatal(err)
	}
	w = post("/console/replays/preview", url.Values{"state": {"dead"}})
	if body := w.Body.String(); w.Code != 200 || !strings.Contains(body, fmt.Sprintf("more than %d events", replay.MaxEvents)) || strings.Contains(body, `id="replay-confirm"`) {
		t.Errorf("confirmation of %d dead events: %d, want 200 saying it is too many, without a confirm button:\n%.2000s", replay.MaxEvents+3, w.Code, body)
	}
}

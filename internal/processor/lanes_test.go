package processor

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// insertLane stores n generic messages on lane, each due at once, received in order.
func insertLane(t testing.TB, pool *pgxpool.Pool, lane string, n int) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, lane, payload)
SELECT 'generic', $1 || '-' || i || '-' || clock_timestamp(), $1,
       jsonb_build_object('type', 'message.received', 'timestamp', '2026-01-02T03:04:05Z',
           'data', jsonb_build_object('message_id', $1 || '-' || i || '-' || clock_timestamp(),
               'channel', $1, 'contact', '+1555' || lpad((i % 1000)::text, 7, '0'), 'text', 'x'))
FROM generate_series(1, $2::int) AS i`, lane, n)
	if err != nil {
		t.Fatalf("insert %d events on lane %s: %v", n, lane, err)
	}
}

// byLane counts claimed events per lane.
func byLane(evs []claimed) map[string]int {
	out := map[string]int{}
	for _, e := range evs {
		out[e.Lane]++
	}
	return out
}

func claimN(t *testing.T, p *Processor, limit int) []claimed {
	t.Helper()
	evs, err := p.claim(context.Background(), limit)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestClaimIsFairAcrossLanes: a claim takes each lane with due events' share, however
// deep another lane's backlog is and however much older its events are, and still
// fills the batch from the backlog.
func TestClaimIsFairAcrossLanes(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	insertLane(t, pool, "generic/flood", 2000)
	for i := range 5 {
		insertLane(t, pool, fmt.Sprintf("generic/trickle-%d", i), 1)
	}
	p := holder(t, pool, "fair", time.Minute)
	got := byLane(claimN(t, p, 16))
	for i := range 5 {
		if lane := fmt.Sprintf("generic/trickle-%d", i); got[lane] != 1 {
			t.Errorf("first claim took %d events of %s behind a 2,000-event backlog, want 1 (claimed %v)", got[lane], lane, got)
		}
	}
	// The trickles' unused shares go to the backlog: the batch is full.
	if got["generic/flood"] != 11 {
		t.Errorf("first claim took %d backlog events, want the other 11 of the batch of 16 (claimed %v)", got["generic/flood"], got)
	}
	// Alone, a lane fills whole batches.
	if got := byLane(claimN(t, p, 16)); got["generic/flood"] != 16 {
		t.Errorf("second claim took %v, want 16 of the backlog", got)
	}
}

// TestClaimWeights: lanes share a batch in proportion to INBOX_LANE_WEIGHTS.
func TestClaimWeights(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	insertLane(t, pool, "generic/b-heavy", 200)
	insertLane(t, pool, "generic/a-light", 200)
	p := New(pool, "", Config{ID: "weights", Lease: time.Minute, LaneWeights: map[string]int{"generic/b-heavy": 3}}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	if got := byLane(claimN(t, p, 16)); got["generic/b-heavy"] != 12 || got["generic/a-light"] != 4 {
		t.Errorf("claimed %v, want generic/b-heavy 12 and generic/a-light 4 (weights 3:1)", got)
	}
}

// TestClaimGoesRoundTheLanes: with more lanes than a batch has events, each claim
// starts where the last one stopped, so every lane gets its turn before any gets a
// second one; a claim visits no more lanes than it takes events.
func TestClaimGoesRoundTheLanes(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	const lanes, batch = 40, 8
	for i := range lanes {
		insertLane(t, pool, fmt.Sprintf("generic/lane-%02d", i), 5)
	}
	p := holder(t, pool, "round", time.Minute)
	seen := map[string]int{}
	for range lanes / batch {
		evs := claimN(t, p, batch)
		if len(evs) != batch {
			t.Fatalf("claimed %d, want %d", len(evs), batch)
		}
		for lane, n := range byLane(evs) {
			seen[lane] += n
		}
	}
	for i := range lanes {
		if lane := fmt.Sprintf("generic/lane-%02d", i); seen[lane] != 1 {
			t.Errorf("after %d claims of %d, lane %s had %d events claimed, want 1 each (%v)", lanes/batch, batch, lane, seen[lane], seen)
		}
	}
}

// TestTrickleIsNotStarvedByABacklog runs the processor through a backlog on one lane
// while events arrive on others: each of those is processed after at most a few
// batches of the backlog, not after the backlog.
func TestTrickleIsNotStarvedByABacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, url := newDB(t)
	const batch, backlog = 16, 4000
	insertLane(t, pool, "generic/flood", backlog)
	start(t, url, Config{Workers: 1, BatchSize: batch})
	waitFlood := func(atLeast int) int {
		var n int
		deadline := time.Now().Add(time.Minute)
		for {
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE lane = 'generic/flood' AND state = 'processed'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n >= atLeast || time.Now().After(deadline) {
				return n
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFlood(batch * 4) // the backlog is being drained
	for round := range 5 {
		lane := fmt.Sprintf("generic/trickle-%d", round)
		insertLane(t, pool, lane, 3)
		before := waitFlood(0)
		var processed bool
		deadline := time.Now().Add(time.Minute)
		for !processed && time.Now().Before(deadline) {
			if err := pool.QueryRow(ctx, `SELECT bool_and(state = 'processed') FROM inbound_events WHERE lane = $1`, lane).Scan(&processed); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		var meanwhile int
		if err := pool.QueryRow(ctx, `
SELECT count(*) FROM inbound_events f
WHERE f.lane = 'generic/flood' AND f.state = 'processed'
  AND f.processed_at < (SELECT max(processed_at) FROM inbound_events WHERE lane = $1)`, lane).Scan(&meanwhile); err != nil {
			t.Fatal(err)
		}
		// The batch in flight when they arrived, and the claims that take them.
		if d := meanwhile - before; !processed || d > 3*batch {
			t.Fatalf("round %d: %s processed %v after %d more backlog events, want at most %d (3 batches)", round, lane, processed, d, 3*batch)
		}
	}
	// A claim's events share its run_at (the end of its lease). The trickle's events
	// were committed in a transaction of their own (another xmin), not with the
	// backlog's events of their claim.
	var apart, together int
	if err := pool.QueryRow(ctx, `
SELECT count(*) FILTER (WHERE t.xmin::text <> f.xmin::text), count(*) FILTER (WHERE t.xmin::text = f.xmin::text)
FROM inbound_events t JOIN inbound_events f ON f.run_at = t.run_at AND f.lane = 'generic/flood'
WHERE t.lane LIKE 'generic/trickle-%'`).Scan(&apart, &together); err != nil {
		t.Fatal(err)
	}
	if apart == 0 || together > 0 {
		t.Errorf("the trickle's events shared a transaction with the backlog's events of their claim %d times (apart %d), want never", together, apart)
	}
}

func TestParseLaneWeights(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want map[string]int
		err  string
	}{
		{"", map[string]int{}, ""},
		{"meta/1=4, twilio/+1555=2", map[string]int{"meta/1": 4, "twilio/+1555": 2}, ""},
		{"generic:a=b/x=3", map[string]int{"generic:a=b/x": 3}, ""},
		{"meta/1", nil, "is not lane=weight"},
		{"=3", nil, "is not lane=weight"},
		{"meta/1=0", nil, "from 1 to 100"},
		{"meta/1=101", nil, "from 1 to 100"},
		{"meta/1=x", nil, "from 1 to 100"},
		{"meta/1=2,meta/1=3", nil, "twice"},
	} {
		got, err := ParseLaneWeights(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseLaneWeights(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ParseLaneWeights(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestSplitBacklog(t *testing.T) {
	t.Parallel()
	evs := func(lanes ...string) []claimed {
		var out []claimed
		for i, l := range lanes {
			out = append(out, claimed{ID: int64(i), Lane: l})
		}
		return out
	}
	for _, c := range []struct {
		name           string
		events         []claimed
		batch          int
		light, backlog int
	}{
		{"a batch not full is applied whole", evs("a", "a", "a", "b"), 8, 4, 0},
		{"one lane holding the batch is its backlog", evs("a", "a", "a", "a", "a", "a", "a", "a"), 8, 0, 8},
		{"other lanes beside a backlog go first", evs("a", "a", "a", "a", "a", "b", "c", "a"), 8, 2, 6},
		{"no lane holds half: whole", evs("a", "a", "a", "b", "b", "c", "c", "d"), 8, 8, 0},
	} {
		light, backlog := splitBacklog(c.events, c.batch)
		if len(light) != c.light || len(backlog) != c.backlog {
			t.Errorf("%s: %d light and %d backlog, want %d and %d", c.name, len(light), len(backlog), c.light, c.backlog)
		}
		for _, e := range backlog {
			if e.Lane != "a" {
				t.Errorf("%s: backlog holds lane %s", c.name, e.Lane)
			}
		}
	}
}

// TestABacklogLeavesWorkersFree: while a backlog drains, at most a quarter of the
// workers claim (claimers), so that the others, idle, can apply what this process's
// ingest hands over meanwhile instead of it queueing behind the backlog for the CPU.
func TestABacklogLeavesWorkersFree(t *testing.T) {
	t.Parallel()
	pool, url := newDB(t)
	insertLane(t, pool, "generic/flood", 3000)
	var mu sync.Mutex
	most := int32(0)
	startConfigured(t, url, Config{Workers: 8, BatchSize: 16}, func(p *Processor) {
		p.afterClaim = func(int) {
			mu.Lock()
			most = max(most, p.active.Load())
			mu.Unlock()
		}
	})
	waitSettled(t, pool, 2*time.Minute)
	mu.Lock()
	defer mu.Unlock()
	// Two may both see one claimer and call a peer at the same moment: one more, for
	// an instant.
	if limit := int32(claimers(8)) + 1; most > limit || most < 2 {
		t.Errorf("at most %d workers claimed at once during a 3,000-event backlog; want 2 to %d of 8", most, limit)
	}
}

// FuzzParseLaneWeights: any setting is refused or read without a panic; what is read
// has every weight within bounds and writes back (lane=weight, comma-separated) to
// the same weights.
func FuzzParseLaneWeights(f *testing.F) {
	for _, s := range []string{"", "meta/100000000000001=4,twilio/+15550001111=2", "a=b=3", "x=0", "x=101", "x=1,x=2", " , "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		w, err := ParseLaneWeights(s)
		if err != nil {
			return
		}
		var pairs []string
		for lane, n := range w {
			if n < 1 || n > MaxLaneWeight || lane == "" {
				t.Fatalf("ParseLaneWeights(%q) = %v: lane %q weighs %d", s, w, lane, n)
			}
			pairs = append(pairs, fmt.Sprintf("%s=%d", lane, n))
		}
		back, err := ParseLaneWeights(strings.Join(pairs, ","))
		if err != nil || !maps.Equal(back, w) {
			t.Fatalf("ParseLaneWeights(%q) = %v, written back as %q reads %v, %v", s, w, strings.Join(pairs, ","), back, err)
		}
	})
}

// TestReadLanes: events stored without a lane are "none"; a lane whose events all
// wait for a retry is not behind (oldest due 0); and the lanes' gauges keep only the
// lanes of the last sample.
func TestReadLanes(t *testing.T) {
	t.Parallel()
	db, _ := newDB(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, lane, run_at) VALUES
    ('generic', 'l-1', '{}', '', now() - interval '10 seconds'),
    ('generic', 'l-2', '{}', 'generic/+15550001111', now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	lanes, err := ReadLanes(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(lanes) != 2 || lanes[0].Lane != "none" || lanes[0].OldestDueSeconds < 9 ||
		lanes[1].Lane != "generic/+15550001111" || lanes[1].OldestDueSeconds != 0 {
		t.Fatalf("lanes %+v, want none 10 s behind, then generic/+15550001111 not behind", lanes)
	}
	p := New(db, "", Config{}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	if err := p.updateLanes(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `DELETE FROM inbound_events WHERE external_id = 'l-1'`); err != nil {
		t.Fatal(err)
	}
	if err := p.updateLanes(ctx); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(p.metrics.lanePending); n != 1 {
		t.Errorf("%d lanes in inbox_lane_pending after a lane drained, want 1", n)
	}
}

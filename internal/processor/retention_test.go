package processor

import (
	"context"
	"fmt"
	"inboxd/internal/pgtest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// retentionWorld stores events and parked statuses with the given ages: for each
// state, `old` events received 10 days ago and `recent` ones received a minute ago,
// each processed one with its message.
func retentionWorld(t *testing.T, pool *pgxpool.Pool, old, recent int) {
	t.Helper()
	ctx := context.Background()
	for _, age := range []struct {
		n   int
		ago string
	}{{old, "10 days"}, {recent, "1 minute"}} {
		_, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, received_at, processed_at)
SELECT 'generic', s || '-' || $2 || '-' || g, '{}', s, now() - $2::interval, CASE WHEN s = 'processed' THEN now() END
FROM generate_series(1, $1) AS g, unnest(ARRAY['processed', 'dead', 'pending']) AS s`, age.n, age.ago)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pool.Exec(ctx, `
INSERT INTO changes (type, conversation_id, data, occurred_at)
SELECT 'contact.erased', g, '{}', now() - $2::interval FROM generate_series(1, $1) AS g`, age.n, age.ago)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pool.Exec(ctx, `
INSERT INTO pending_statuses (provider, provider_message_id, inbound_event_id, status, status_at, created_at)
SELECT 'generic', 'unseen-' || $2 || '-' || g, g, 'delivered', now(), now() - $2::interval FROM generate_series(1, $1) AS g`, age.n, age.ago)
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := pool.Exec(ctx, `
INSERT INTO conversations (provider, channel_address, contact_address, last_message_at) VALUES ('generic', 'c', 'k', now());
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, status, sent_at, inbound_event_id)
SELECT 'generic', 'm-' || id, (SELECT id FROM conversations), 'inbound', 'k', 'c', 'received', now(), id
FROM inbound_events WHERE state = 'processed'`)
	if err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestRetention: processed events, parked statuses and the feed's changes past
// Retention and dead
// events past DeadRetention are deleted, in batches, and counted; messages,
// pending events and everything recent stay.
func TestRetention(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	retentionWorld(t, pool, 2500, 10) // more than two batches of each
	p := New(pool, "", Config{Retention: time.Hour, DeadRetention: 9 * 24 * time.Hour}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	if err := p.retainOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		sql  string
		want int
	}{
		{"processed events", "SELECT count(*) FROM inbound_events WHERE state = 'processed'", 10},
		{"dead events", "SELECT count(*) FROM inbound_events WHERE state = 'dead'", 10},
		{"pending events (never deleted)", "SELECT count(*) FROM inbound_events WHERE state = 'pending'", 2510},
		{"parked statuses", "SELECT count(*) FROM pending_statuses", 10},
		{"changes of the feed", "SELECT count(*) FROM changes", 10},
		{"messages (the product: kept)", "SELECT count(*) FROM messages", 2510},
	} {
		if got := count(t, pool, c.sql); got != c.want {
			t.Errorf("%s after retention: %d, want %d", c.what, got, c.want)
		}
	}
	for what, want := range map[string]float64{"processed_events": 2500, "dead_events": 2500, "parked_statuses": 2500, "changes": 2500} {
		if got := testutil.ToFloat64(p.metrics.retained.WithLabelValues(what)); got != want {
			t.Errorf("inbox_retention_deleted_total{what=%q} = %v, want %v", what, got, want)
		}
	}
}

// TestRetentionKeepsUndeliveredChanges: a change past the retention that a
// subscription has yet to deliver (waiting, pending or delivering) stays, with its
// delivery, until the delivery ends; one delivered or dead goes.
func TestRetentionKeepsUndeliveredChanges(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
WITH s AS (INSERT INTO subscriptions (url, types, secret, cursor_xid, cursor_seq)
           VALUES ('https://crm.example.com/hooks', '{message.created}', 'whsec_x', '0', 0) RETURNING id),
     c AS (INSERT INTO changes (type, conversation_id, data, occurred_at)
           SELECT 'contact.erased', 7, jsonb_build_object('state', st), now() - interval '10 days'
           FROM unnest(ARRAY['delivered', 'dead', 'delivering', 'pending', 'waiting']) st
           RETURNING xid, seq, data->>'state' AS state)
INSERT INTO deliveries (subscription_id, change_xid, change_seq, conversation_id, state)
SELECT s.id, c.xid, c.seq, 7, c.state FROM s, c;
UPDATE subscriptions SET (cursor_xid, cursor_seq) = (SELECT xid, seq FROM changes ORDER BY xid DESC, seq DESC LIMIT 1)`) // fanned out
	if err != nil {
		t.Fatal(err)
	}
	if left := retainChanges(t, pool, "state"); left != "[delivering pending waiting]" {
		t.Errorf("changes left after retention, by their delivery's state: %v, want those still to deliver: [delivering pending waiting]", left)
	}
	if n := count(t, pool, `SELECT count(*) FROM deliveries WHERE state IN ('waiting', 'pending', 'delivering')`); n != 3 {
		t.Errorf("%d deliveries still to deliver after retention, want 3", n)
	}
}

// hourRetention is a processor that keeps processed events and changes an hour, for
// passes run by hand (retainOnce).
func hourRetention(pool *pgxpool.Pool) *Processor {
	return New(pool, "", Config{Retention: time.Hour}, zapNop(), NewMetrics(prometheus.NewRegistry()))
}

// retainChanges runs one retention pass and returns the changes left, each as its
// data's key, in the order they were made.
func retainChanges(t *testing.T, pool *pgxpool.Pool, key string) string {
	t.Helper()
	if err := hourRetention(pool).retainOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	var left []string
	if err := pool.QueryRow(context.Background(), `SELECT array_agg(data->>$1 ORDER BY seq) FROM changes`, key).Scan(&left); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(left)
}

// TestRetentionMovesTheFeedHorizon: retention records the last change it deleted as
// the feed's horizon (internal/feed refuses cursors before it), and never moves it
// back.
func TestRetentionMovesTheFeedHorizon(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	p := hourRetention(pool)
	horizon := func() string {
		var h string
		if err := pool.QueryRow(ctx, `SELECT COALESCE((SELECT xid::text || '.' || seq FROM changes_horizon), 'none')`).Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if err := p.retainOnce(ctx); err != nil || horizon() != "none" {
		t.Fatalf("retention with no changes: %v, horizon %s; want none", err, horizon())
	}
	var last string
	if err := pool.QueryRow(ctx, `
WITH c AS (INSERT INTO changes (type, conversation_id, data, occurred_at)
           SELECT 'conversation.created', g, '{}', now() - interval '10 days' + g * interval '1 second' FROM generate_series(1, 3) g
           RETURNING xid, seq)
SELECT xid::text || '.' || seq FROM c ORDER BY seq DESC LIMIT 1`).Scan(&last); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO changes (type, conversation_id, data) VALUES ('conversation.created', 4, '{}')`); err != nil {
		t.Fatal(err)
	}
	if err := p.retainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if h := horizon(); h != last {
		t.Errorf("horizon after retention deleted three changes: %s, want the last of them, %s", h, last)
	}
	// A horizon already past what a pass deletes stays where it is.
	if _, err := pool.Exec(ctx, `
UPDATE changes_horizon SET xid = (xid::text::bigint + 1000)::text::xid8;
INSERT INTO changes (type, conversation_id, data, occurred_at) VALUES ('conversation.created', 5, '{}', now() - interval '10 days')`); err != nil {
		t.Fatal(err)
	}
	ahead := horizon()
	if err := p.retainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if h := horizon(); h != ahead {
		t.Errorf("horizon moved from %s back to %s", ahead, h)
	}
}

// TestRetentionKeepsWhatAPausedSubscriptionIsOwed: a subscription paused longer than
// the retention is not fanned out, so the changes after its cursor have no deliveries
// to keep them; retention keeps them all the same, for it to be sent when it resumes,
// and deletes those before the lowest cursor.
func TestRetentionKeepsWhatAPausedSubscriptionIsOwed(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO changes (type, conversation_id, data, occurred_at)
SELECT 'conversation.created', g, jsonb_build_object('n', g), now() - interval '10 days' FROM generate_series(1, 4) g;
INSERT INTO subscriptions (url, types, secret, state, cursor_xid, cursor_seq)
SELECT 'https://crm.example.com/hooks', '{conversation.created}', 'whsec_x', 'paused', xid, seq
FROM changes WHERE data->>'n' = '2'`); err != nil {
		t.Fatal(err)
	}
	if left := retainChanges(t, pool, "n"); left != "[3 4]" {
		t.Errorf("changes left after retention: %v, want those after the paused subscription's cursor: [3 4]", left)
	}
}

// TestRetentionZeroKeeps: 0 turns each retention off.
func TestRetentionZeroKeeps(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	retentionWorld(t, pool, 5, 0)
	p := New(pool, "", Config{Retention: 0, DeadRetention: time.Hour}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	// The loop a process runs, not one pass: dead retention alone keeps it running.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.retain(ctx); close(done) }()
	pgtest.Eventually(t, "the loop deletes the old dead events", time.Minute, func() (bool, error) {
		return count(t, pool, "SELECT count(*) FROM inbound_events WHERE state = 'dead'") == 0, nil
	})
	cancel()
	<-done
	if got := count(t, pool, "SELECT count(*) FROM inbound_events WHERE state = 'processed'") + count(t, pool, "SELECT count(*) FROM pending_statuses"); got != 10 {
		t.Errorf("with Retention 0, %d processed events and parked statuses left, want all 10", got)
	}
	if got := count(t, pool, "SELECT count(*) FROM inbound_events WHERE state = 'dead'"); got != 0 {
		t.Errorf("%d dead events left past DeadRetention, want 0", got)
	}
}

// TestRetentionOneProcessAtATime: while another process holds the retention lock,
// this one deletes nothing; once it is free, it does.
func TestRetentionOneProcessAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	retentionWorld(t, pool, 5, 0)
	p := New(pool, "", Config{Retention: time.Hour, DeadRetention: time.Hour}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(retentionLock)); err != nil {
		t.Fatal(err)
	}
	if err := p.retainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(t, pool, "SELECT count(*) FROM inbound_events"); got != 15 {
		t.Errorf("with the lock held elsewhere, %d events left, want all 15", got)
	}
	tx.Rollback(ctx)
	if err := p.retainOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(t, pool, "SELECT count(*) FROM inbound_events"); got != 5 {
		t.Errorf("after the lock is free, %d events left, want the 5 pending", got)
	}
}

// TestRetentionBoundary: the binary search finds the first id received at or after
// the cutoff, whatever the table holds.
func TestRetentionBoundary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	p := New(pool, "", Config{}, zapNop(), NewMetrics(prometheus.NewRegistry()))
	cutoff := time.Now().Add(-time.Hour)
	if b, err := p.retentionBoundary(ctx, cutoff); err != nil || b != 0 {
		t.Errorf("empty table: boundary %d (%v), want 0", b, err)
	}
	// ids 1-700 old, 701-1000 recent, with gaps (deleted rows) among the old.
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, received_at)
SELECT 'generic', 'e-' || g, '{}', CASE WHEN g <= 700 THEN now() - interval '2 hours' ELSE now() END
FROM generate_series(1, 1000) AS g;
DELETE FROM inbound_events WHERE id % 7 = 0 AND id < 690`); err != nil {
		t.Fatal(err)
	}
	if b, err := p.retentionBoundary(ctx, cutoff); err != nil || b != 701 {
		t.Errorf("boundary %d (%v), want 701", b, err)
	}
	if b, err := p.retentionBoundary(ctx, time.Now().Add(-3*time.Hour)); err != nil || b != 1 {
		t.Errorf("nothing old enough: boundary %d (%v), want 1 (the first id)", b, err)
	}
}

// TestQueueStatsEstimate: on a large table the processed count is an estimate, said to
// be one, close to the truth and never negative, while the live states stay exact.
func TestQueueStatsEstimate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := newDB(t)
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state)
SELECT 'generic', 'e-' || g, '{}', CASE WHEN g % 1000 = 0 THEN 'dead' WHEN g % 1000 = 1 THEN 'pending' ELSE 'processed' END
FROM generate_series(1, 150000) AS g`); err != nil {
		t.Fatal(err)
	}
	s := map[string]QueueState{}
	pgtest.Eventually(t, "the statistics see the rows", 10*time.Second, func() (bool, error) {
		states, err := ReadQueue(ctx, pool)
		for _, q := range states {
			s[q.State] = q
		}
		return err == nil && !s["processed"].Exact, err
	})
	if s["pending"].Count != 150 || s["dead"].Count != 150 || s["processing"].Count != 0 ||
		!s["pending"].Exact || !s["dead"].Exact {
		t.Errorf("live states %+v, want 150 pending and 150 dead, exactly", s)
	}
	if want, got := int64(149700), s["processed"].Count; got < want*9/10 || got > want*11/10 {
		t.Errorf("processed estimate %d, want within 10%% of %d", got, want)
	}
}

// TestRetentionInterval: retention runs every tenth of the shorter retention that is
// on, between a second and a minute.
func TestRetentionInterval(t *testing.T) {
	for _, tc := range []struct {
		retention, dead, want time.Duration
	}{
		{DefaultRetention, DefaultDeadRetention, time.Minute},
		{5 * time.Minute, time.Hour, 30 * time.Second},
		{time.Hour, 5 * time.Minute, 30 * time.Second},
		{0, 5 * time.Minute, 30 * time.Second},
		{5 * time.Minute, 0, 30 * time.Second},
		{time.Second, 0, time.Second},
	} {
		if got := retentionInterval(Config{Retention: tc.retention, DeadRetention: tc.dead}); got != tc.want {
			t.Errorf("retention %s, dead %s: every %s, want %s", tc.retention, tc.dead, got, tc.want)
		}
	}
}

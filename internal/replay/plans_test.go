package replay

import (
	"context"
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestWaitingPlans: while a replay's batch waits to be attempted, the runner's poll
// (awaitBatch) and the jobs list (jobColumns) find the batch's events by their primary
// key, in custom and generic plans alike. The table holds 100,000 events, the last
// 30,000 pending again, as a replay leaves them, unseen by the statistics: a bitmap
// of the queue's partial indexes would read every one of them on every poll.
func TestWaitingPlans(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at)
SELECT 'generic', 'e-' || g, '{}', 'processed', now() FROM generate_series(1, 100000) AS g;
ANALYZE inbound_events;
UPDATE inbound_events SET state = 'pending', attempts = 0, run_at = now(), processed_at = NULL WHERE id > 70000;
INSERT INTO replays (filter, rate, up_to, total, state, last_batch, requested_by)
VALUES ('{}', 100, 100000, 30000, 'running', '{90001,90002,99999}', 'test')`); err != nil {
		t.Fatal(err)
	}
	plans := pgtest.PlanPool(t, url)
	batch := []int64{90001, 90002, 99999}
	for name, c := range map[string]struct {
		sql  string
		args []any
	}{
		"awaitBatch": {awaitBatch, []any{batch}},
		"jobs":       {`SELECT ` + jobColumns + ` FROM replays r ORDER BY id DESC LIMIT $1`, []any{50}},
	} {
		for _, generic := range []bool{false, true} {
			p := pgtest.GenericPlan(t, plans, c.sql)
			if !generic {
				p = pgtest.Plan(t, plans, false, c.sql, c.args...)
			}
			p = strings.Join(strings.Fields(p), " ")
			for _, node := range strings.Split(p, " | ") {
				// The jobs list walks replays_pkey in order up to its limit.
				if strings.Contains(node, "inbound_events") && (strings.HasPrefix(node, "Seq Scan") || strings.Contains(node, pgtest.WholeIndex)) {
					t.Errorf("%s (generic: %v): plan %s reads %s, want inbound_events read by its primary key only", name, generic, p, node)
				}
			}
			if !strings.Contains(p, "inbound_events_pkey") {
				t.Errorf("%s (generic: %v): plan %s, want inbound_events read by its primary key", name, generic, p)
			}
		}
	}
	// What the count counts, each clause of its FILTER: requeued and not yet claimed
	// (90001), claimed (90002); not a retry waiting for its next attempt (90003), nor
	// one finished (99999).
	if _, err := pool.Exec(ctx, `
UPDATE inbound_events SET state = 'processing', attempts = 1 WHERE id = 90002;
UPDATE inbound_events SET attempts = 1 WHERE id = 90003;
UPDATE inbound_events SET state = 'processed' WHERE id = 99999`); err != nil {
		t.Fatal(err)
	}
	var waiting int64
	if err := pool.QueryRow(ctx, awaitBatch, []int64{90001, 90002, 90003, 99999}).Scan(&waiting); err != nil || waiting != 2 {
		t.Fatalf("awaitBatch = %d, %v; want 2 events waiting", waiting, err)
	}
}

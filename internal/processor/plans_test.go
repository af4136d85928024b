package processor

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
)

// TestProcessorPlans: each statement of a claim or an apply, planned generic (as
// plan_cache_mode force_generic_plan has it, session.go) on tables the planner has
// never seen filled, reads its tables through an index: the arrays' size is unknown
// to a generic plan, and a hash join over a sequential scan, cheap on an empty table,
// would stay cached while the table grows; so would a join that reads the whole of an
// index (a merge or hash join against an index scan with no condition).
//
// It plans twice: on tables never analyzed, and on tables analyzed while they held a
// few events, as after a warm-up on a fresh database (the planner then believes
// inbound_events one row long: an update joined to a claim's ids by walking the whole
// primary key cost a backlog's drain half its rate, in the connections whose plans
// were made then).
func TestProcessorPlans(t *testing.T) {
	t.Parallel()
	db, url := newDB(t)
	pool := pgtest.PlanPool(t, url, planSettings...)
	checkPlans(t, pool, "never analyzed")
	insertLane(t, db, "generic/warm", 3)
	if _, err := db.Exec(context.Background(), "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	checkPlans(t, pool, "analyzed with 3 events")
}

func checkPlans(t *testing.T, pool *pgxpool.Pool, tables string) {
	t.Helper()
	for name, sql := range map[string]string{
		"claimDue": claimDue, "rescueExpired": rescueExpired, "finish": finish, "release": release,
		"ensureConversations": ensureConversations, "insertMessages": insertMessages,
		"applyStatuses": applyStatuses, "touchConversations": touchConversations,
		"deleteProcessed": deleteProcessed, "deleteDead": deleteDead, "deleteParked": deleteParked, "deleteChanges": deleteChanges,
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		// Retention reads the subscriptions' cursors whole, once a statement: a table of
		// the few subscriptions an operator made.
		p = strings.ReplaceAll(p, "Seq Scan  subscriptions", "")
		if strings.Contains(p, "Seq Scan") || strings.Contains(p, pgtest.WholeIndex) {
			t.Errorf("%s, tables %s: generic plan %s, want index lookups only", name, tables, p)
		}
	}
}

// TestRequeuePlans: a replay's requeue finds the events it is given by their primary
// key, and a bulk replay of dead events walks their partial index (in id order, up to
// its limit), in custom and generic plans alike, on a table of 100,000 events with a
// pending backlog the statistics have not seen (a replay's own batches make one):
// never the whole table in id order, which a replay would pay batch after batch.
func TestRequeuePlans(t *testing.T) {
	t.Parallel()
	db, url := newDB(t)
	pool := pgtest.PlanPool(t, url)
	bigQueue(t, db)
	for name, c := range map[string]struct {
		sql   string
		args  []any
		index string // read, and the only index that may be read whole
	}{
		"by id": {requeueIDs, []any{[]int64{90001, 90002, 99999}}, "inbound_events_pkey"},
		"dead":  {requeueStates["dead"], []any{"", 100}, "inbound_events_dead"},
	} {
		for _, generic := range []bool{false, true} {
			p := pgtest.GenericPlan(t, pool, c.sql)
			if !generic {
				p = pgtest.Plan(t, pool, false, c.sql, c.args...)
			}
			p = strings.Join(strings.Fields(p), " ")
			allowed := strings.ReplaceAll(p, c.index+" inbound_events "+pgtest.WholeIndex, "")
			if strings.Contains(p, "Seq Scan inbound_events") || strings.Contains(allowed, pgtest.WholeIndex) || !strings.Contains(p, c.index) {
				t.Errorf("%s (generic: %v): plan %s, want %s read and no other index whole", name, generic, p, c.index)
			}
		}
	}
}

// bigQueue fills inbound_events with 100,000 processed events, one in 10,000 dead,
// analyzes it, and then puts the last 30,000 back to pending, unseen by the
// statistics.
func bigQueue(t *testing.T, db *pgxpool.Pool) {
	t.Helper()
	if _, err := db.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at)
SELECT 'generic', 'e-' || g, '{}', CASE WHEN g % 10000 = 0 THEN 'dead' ELSE 'processed' END, now()
FROM generate_series(1, 100000) AS g;
ANALYZE inbound_events;
UPDATE inbound_events SET state = 'pending', attempts = 0, run_at = now(), processed_at = NULL
WHERE id > 70000 AND state = 'processed'`); err != nil {
		t.Fatal(err)
	}
}

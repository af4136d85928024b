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
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		if strings.Contains(p, "Seq Scan") || strings.Contains(p, pgtest.WholeIndex) {
			t.Errorf("%s, tables %s: generic plan %s, want index lookups only", name, tables, p)
		}
	}
}

package processor

import (
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestProcessorPlans: each statement of a claim or an apply, planned generic (as
// plan_cache_mode force_generic_plan has it, session.go) on tables the planner has
// never seen filled, reads its tables through an index: the arrays' size is unknown
// to a generic plan, and a hash join over a sequential scan, cheap on an empty table,
// would stay cached while the table grows; so would a join that reads the whole of an
// index (a merge or hash join against an index scan with no condition).
func TestProcessorPlans(t *testing.T) {
	t.Parallel()
	_, url := newDB(t)
	pool := pgtest.PlanPool(t, url, planSettings...)
	for name, sql := range map[string]string{
		"claimDue": claimDue, "rescueExpired": rescueExpired, "finish": finish,
		"ensureConversations": ensureConversations, "insertMessages": insertMessages,
		"applyStatuses": applyStatuses, "touchConversations": touchConversations,
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		// inbound_events_leases holds only the events in flight (processing): what the
		// workers of the running processes hold, however large the table grows.
		whole := strings.Count(p, pgtest.WholeIndex) - strings.Count(p, "inbound_events_leases inbound_events "+pgtest.WholeIndex)
		if strings.Contains(p, "Seq Scan") || whole > 0 {
			t.Errorf("%s: generic plan %s, want index lookups only", name, p)
		}
	}
}

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
// would stay cached while the table grows.
func TestProcessorPlans(t *testing.T) {
	t.Parallel()
	_, url := newDB(t)
	pool := pgtest.PlanPool(t, url)
	for name, sql := range map[string]string{
		"claimDue": claimDue, "rescueExpired": rescueExpired, "finish": finish,
		"ensureConversations": ensureConversations, "insertMessages": insertMessages,
		"applyStatuses": applyStatuses, "touchConversations": touchConversations,
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		if strings.Contains(p, "Seq Scan") {
			t.Errorf("%s: generic plan %s, want index scans only", name, p)
		}
	}
}

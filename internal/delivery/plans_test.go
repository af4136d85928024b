package delivery

import (
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestDeliveryPlans: each statement of fan-out, claims, finishes and the sweep,
// planned generic on tables the planner has never seen filled (as a queue's are, to
// it), reads deliveries, changes and the changes' messages through an index only: a sequential scan of
// deliveries, which keeps every delivered row until retention, would grow with it on
// every claim, finish or sweep. (subscriptions is read whole: there are a handful.)
func TestDeliveryPlans(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	pool := pgtest.PlanPool(t, url, "enable_seqscan", "off")
	// The sweep's statements run every second in every process: each must read only
	// what it is after, not walk every undelivered delivery.
	wantIndex := map[string]string{"rescueExpired": "deliveries_leases", "giveUpCandidates": "deliveries_since"}
	for name, sql := range map[string]string{
		"insertDeliveries": insertDeliveries, "claimDue": claimDue, "finishAttempts": finishAttempts,
		"rescueExpired": rescueExpired, "giveUpCandidates": giveUpCandidates, "giveUp": giveUp,
		"lagSQL": lagSQL, "listDeliveries": listDeliveries,
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		if want := wantIndex[name]; want != "" && !strings.Contains(p, want) {
			t.Errorf("%s: generic plan %s, want it to read %s", name, p, want)
		}
		for _, table := range []string{"deliveries", "changes", "messages"} {
			if strings.Contains(strings.Join(strings.Fields(p), " "), "Seq Scan "+table) {
				t.Errorf("%s: generic plan %s, want index scans of %s", name, p, table)
			}
		}
	}
}

package delivery

import (
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestDeliveryPlans: each statement of fan-out, claims, finishes and the sweep,
// planned generic on tables the planner has never seen filled (as a queue's are, to
// it), reads deliveries, changes and the changes' messages through an index only,
// and no index whole: a sequential scan of deliveries, which keeps every delivered row
// until retention, would grow with it on every claim, finish or sweep, and a partial
// index read whole (deliveries_leases for the finish's state) with its dead entries.
// (subscriptions is read whole: there are a handful.)
func TestDeliveryPlans(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	pool := pgtest.PlanPool(t, url, "enable_seqscan", "off")
	// The sweep's statements run every second in every process: each must read only
	// what it is after, not walk every undelivered delivery.
	wantIndex := map[string]string{"rescueExpired": "deliveries_leases", "giveUpCandidates": "deliveries_since"}
	// The finish finds its rows by key: through deliveries_leases it read every
	// in-flight and dead entry; through deliveries_listing, by its second column,
	// every delivery.
	avoid := map[string][]string{"finishAttempts": {"deliveries_leases", "deliveries_listing"}}
	for name, sql := range map[string]string{
		"insertDeliveries": insertDeliveries, "claimDue": claimDue, "finishAttempts": finishAttempts,
		"rescueExpired": rescueExpired, "giveUpCandidates": giveUpCandidates, "giveUp": giveUp,
		"lagSQL": lagSQL, "listDeliveries": listDeliveries, "otherConversations": otherConversations, "forgetSecrets": forgetSecrets,
		"outbound": outbound,
	} {
		p := pgtest.GenericPlan(t, pool, sql)
		if want := wantIndex[name]; want != "" && !strings.Contains(p, want) {
			t.Errorf("%s: generic plan %s, want it to read %s", name, p, want)
		}
		for _, index := range avoid[name] {
			if strings.Contains(p, index) {
				t.Errorf("%s: generic plan %s, want it not to read %s", name, p, index)
			}
		}
		whole := strings.Count(p, pgtest.WholeIndex) - strings.Count(p, "subscriptions_pkey subscriptions "+pgtest.WholeIndex)
		if whole > 0 {
			t.Errorf("%s: generic plan %s, want no index read whole", name, p)
		}
		for _, table := range []string{"deliveries", "changes", "messages", "conversations"} {
			if strings.Contains(strings.Join(strings.Fields(p), " "), "Seq Scan "+table) {
				t.Errorf("%s: generic plan %s, want index scans of %s", name, p, table)
			}
		}
	}
}

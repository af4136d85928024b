package privacy

import (
	"context"
	"strings"
	"testing"

	"inboxd/internal/pgtest"
)

// TestParkedStatusPlans: an erasure's step, its dry run and a subject's export find the
// statuses the subject's events parked by the event (pending_statuses_event), not by
// reading pending_statuses whole, and the step's inHand reads the subject's events by
// contact. Here 200,000 statuses wait for messages that never
// arrive, as where outbound messages never reach inboxd; the subject has five events.
// Only custom plans: these statements run on the API's pool, planned per execution
// until Postgres finds a generic plan no dearer.
func TestParkedStatusPlans(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	if _, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at, contact)
SELECT 'generic', 'e-' || g, '{}', 'processed', now(), CASE WHEN g <= 5 THEN '`+alice+`' ELSE '+1555' || lpad((g % 1000)::text, 7, '0') END
FROM generate_series(1, 100000) AS g;
INSERT INTO pending_statuses (provider, provider_message_id, inbound_event_id, status, status_at)
SELECT 'generic', 'out-' || g, 1 + g % 100000, 'delivered', now() FROM generate_series(1, 200000) AS g;
ANALYZE inbound_events, pending_statuses, conversations, messages`); err != nil {
		t.Fatal(err)
	}
	plans := pgtest.PlanPool(t, url)
	forms := []string{alice}
	for name, c := range map[string]struct {
		sql  string
		args []any
	}{
		"eraseEvents":  {eraseEvents, []any{forms, "", 100, []int64{}}},
		"dryRun":       {dryRun, []any{forms, ""}},
		"exportParked": {exportParked, []any{forms, ""}},
	} {
		p := strings.Join(strings.Fields(pgtest.Plan(t, plans, false, c.sql, c.args...)), " ")
		for _, node := range strings.Split(p, " | ") {
			if strings.HasSuffix(node, "pending_statuses") && (strings.HasPrefix(node, "Seq Scan") || strings.Contains(node, pgtest.WholeIndex)) {
				t.Errorf("%s: plan %s reads %s, want pending_statuses read by event", name, p, node)
			}
		}
		if !strings.Contains(p, "pending_statuses_event") {
			t.Errorf("%s: plan %s, want pending_statuses read through pending_statuses_event", name, p)
		}
	}
	// The last batch's look for the subject's events in a processor's hands reads the
	// subject's events alone.
	if p := pgtest.Plan(t, plans, false, inHand, forms, ""); !strings.Contains(p, "inbound_events_contact") {
		t.Errorf("inHand: plan %s, want the subject's events read through inbound_events_contact", p)
	}
}

package processor

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
)

// TestEventListPlans: on 200,000 events of which 20 are dead, each filter of the
// events list reads an index in id order, in the generic plan too: listing dead
// events walks their small partial index, never the whole table.
func TestEventListPlans(t *testing.T) {
	t.Parallel()
	pool, _ := newDB(t)
	if _, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at)
SELECT CASE WHEN g % 3 = 0 THEN 'twilio' ELSE 'generic' END, 'e-' || g, '{}',
       CASE WHEN g % 10000 = 0 THEN 'dead' ELSE 'processed' END, now()
FROM generate_series(1, 200000) AS g;
ANALYZE inbound_events`); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		f     EventFilter
		index string
	}{
		"events":                 {EventFilter{Limit: 51}, "inbound_events_pkey"},
		"events, next page":      {EventFilter{Limit: 51, Before: 150000}, "inbound_events_pkey"},
		"dead events":            {EventFilter{Limit: 51, State: "dead"}, "inbound_events_dead"},
		"dead events, next page": {EventFilter{Limit: 51, State: "dead", Before: 150000}, "inbound_events_dead"},
		"a provider's events":    {EventFilter{Limit: 51, Provider: "twilio"}, "inbound_events_pkey"},
		"a provider's processed": {EventFilter{Limit: 51, Provider: "twilio", State: "processed"}, "inbound_events_pkey"},
	} {
		sql, args := eventsQuery(c.f)
		for _, generic := range []bool{false, true} {
			if p := pgtest.Plan(t, pool, generic, sql, args...); strings.Contains(p, "Seq Scan") || strings.Contains(p, "Sort") || !strings.Contains(p, c.index) {
				t.Errorf("%s (generic plan: %v): %s, want an in-order scan of %s", name, generic, p, c.index)
			}
		}
	}
}

// TestProcessorPlans: each statement of a claim or an apply, planned generic (as
// plan_cache_mode force_generic_plan has it, session.go) on tables the planner has
// never seen filled, reads its tables through an index: the arrays' size is unknown
// to a generic plan, and a hash join over a sequential scan, cheap on an empty table,
// would stay cached while the table grows.
func TestProcessorPlans(t *testing.T) {
	t.Parallel()
	_, url := newDB(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off" // as settings() has it
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for name, sql := range map[string]string{
		"claimDue": claimDue, "rescueExpired": rescueExpired, "finish": finish, "markDone": markDone, "readEvents": readEvents,
		"ensureConversations": ensureConversations, "insertMessages": insertMessages,
		"applyStatuses": applyStatuses, "touchConversations": touchConversations,
	} {
		nulls := make([]any, strings.Count(sql, "$")) // more than enough: EXECUTE ignores none, so trim below
		for i := range nulls {
			nulls[i] = pgtest.Literal("NULL")
		}
		p := pgtest.Plan(t, pool, true, sql, nulls[:params(sql)]...)
		if strings.Contains(p, "Seq Scan") {
			t.Errorf("%s: generic plan %s, want index scans only", name, p)
		}
	}
}

// params returns the highest $n in sql.
func params(sql string) int {
	n := 0
	for i := 0; i < len(sql); i++ {
		if sql[i] != '$' {
			continue
		}
		v := 0
		for j := i + 1; j < len(sql) && sql[j] >= '0' && sql[j] <= '9'; j++ {
			v = v*10 + int(sql[j]-'0')
		}
		n = max(n, v)
	}
	return n
}

package processor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// plan returns the nodes of sql's plan (type, index, relation), depth first. With
// generic, it is the plan Postgres caches once it stops planning each execution (pgx's
// statement cache makes that likely): the query is prepared and explained with
// plan_cache_mode forcing it.
func plan(t *testing.T, pool *pgxpool.Pool, generic bool, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	explain := "EXPLAIN (FORMAT JSON) " + sql
	if generic {
		literals := make([]string, len(args)) // EXECUTE takes literals, not bind parameters
		for i, v := range args {
			if s, ok := v.(string); ok {
				literals[i] = "'" + strings.ReplaceAll(s, "'", "''") + "'"
			} else {
				literals[i] = fmt.Sprint(v)
			}
		}
		for _, s := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE generic_plan AS " + sql} {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		defer conn.Exec(ctx, "RESET plan_cache_mode; DEALLOCATE generic_plan")
		explain, args = "EXPLAIN (FORMAT JSON) EXECUTE generic_plan("+strings.Join(literals, ", ")+")", nil
	}
	var raw []byte
	if err := conn.QueryRow(ctx, explain, args...).Scan(&raw); err != nil {
		t.Fatalf("%s: %v", explain, err)
	}
	type node struct {
		NodeType     string `json:"Node Type"`
		IndexName    string `json:"Index Name"`
		RelationName string `json:"Relation Name"`
		Plans        []node `json:"Plans"`
	}
	var plans []struct{ Plan node }
	if err := json.Unmarshal(raw, &plans); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n node)
	walk = func(n node) {
		out = append(out, strings.TrimSpace(n.NodeType+" "+n.IndexName+" "+n.RelationName))
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return strings.Join(out, " | ")
}

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
			if p := plan(t, pool, generic, sql, args...); strings.Contains(p, "Seq Scan") || strings.Contains(p, "Sort") || !strings.Contains(p, c.index) {
				t.Errorf("%s (generic plan: %v): %s, want an in-order scan of %s", name, generic, p, c.index)
			}
		}
	}
}

package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// planNodes returns the node types of a query's plan, depth first.
func (a *testAPI) planNodes(t testing.TB, sql string, args ...any) []string {
	t.Helper()
	conn, err := a.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	return a.explainOn(t, conn.Conn(), sql, args...)
}

// explainOn explains sql on conn.
func (a *testAPI) explainOn(t testing.TB, conn *pgx.Conn, sql string, args ...any) []string {
	t.Helper()
	var raw []byte
	if err := conn.QueryRow(context.Background(), "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatalf("explain %s: %v", sql, err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(raw, &plans); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n planNode)
	walk = func(n planNode) {
		out = append(out, n.NodeType+" "+n.IndexName+" "+n.RelationName)
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return out
}

type planNode struct {
	NodeType     string     `json:"Node Type"`
	IndexName    string     `json:"Index Name"`
	RelationName string     `json:"Relation Name"`
	Plans        []planNode `json:"Plans"`
}

// TestListQueriesUseIndexes: on 200,000 messages in 2,000 conversations, every list
// query reads its index in order: no sequential scan of a big table, no sort.
func TestListQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 2000, 100)
	cursorTime := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	conv := func(query string) (string, []any) {
		sql, args, _, err := conversationsQuery(httptest.NewRequest("GET", "/v1/conversations?"+query, nil))
		if err != nil {
			t.Fatal(err)
		}
		return sql, args
	}
	cursorQ := "cursor=" + *cursor{T: cursorTime, ID: 500}.encode()
	cases := map[string]struct {
		sql   string
		args  []any
		index string
	}{}
	for name, q := range map[string]string{
		"conversations":            "limit=50",
		"conversations, next page": cursorQ,
		"conversations by contact": "contact=%2B15550000042",
		"conversations since":      "since=2026-11-26T00:00:00Z&" + cursorQ,
	} {
		sql, args := conv(q)
		index := "conversations_latest"
		if strings.Contains(q, "contact") {
			index = "conversations_contact"
		}
		cases[name] = struct {
			sql   string
			args  []any
			index string
		}{sql, args, index}
	}
	cases["messages"] = struct {
		sql   string
		args  []any
		index string
	}{messagesAsc, []any{int64(42), cursorTime, int64(0), 51}, "messages_conversation"}
	cases["messages, newest first"] = struct {
		sql   string
		args  []any
		index string
	}{messagesDesc, []any{int64(42), cursorTime, int64(1 << 62), 51}, "messages_conversation"}
	for name, c := range cases {
		nodes := a.planNodes(t, c.sql, c.args...)
		joined := strings.Join(nodes, " | ")
		if strings.Contains(joined, "Seq Scan") || strings.Contains(joined, "Sort") || !strings.Contains(joined, c.index) {
			t.Errorf("%s: plan %s, want an in-order scan of %s", name, joined, c.index)
		}
	}
}

// BenchmarkListEndpoints serves the list endpoints over HTTP on a million messages
// (10,000 conversations of 100). Seeding takes a while; run it on purpose:
//
//	go test -run '^$' -bench ListEndpoints -benchtime 2000x ./internal/api/
func BenchmarkListEndpoints(b *testing.B) {
	a := newTestAPI(b, false)
	a.seed(b, 10000, 100)
	var convID int64
	a.pool.QueryRow(context.Background(), "SELECT id FROM conversations ORDER BY id LIMIT 1 OFFSET 5000").Scan(&convID)
	for name, path := range map[string]string{
		"conversations":         "/v1/conversations?limit=50",
		"conversations-contact": "/v1/conversations?contact=%2B15550004242",
		"messages":              "/v1/conversations/" + itoa(convID) + "/messages?limit=50",
		"messages-desc":         "/v1/conversations/" + itoa(convID) + "/messages?limit=50&order=desc",
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			req, _ := http.NewRequest("GET", a.url+path, nil)
			req.Header.Set("Authorization", "Bearer "+readToken)
			for b.Loop() {
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != 200 {
					b.Fatalf("GET %s = %v %v", path, resp, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
}

var planCounter atomic.Int64

// genericPlanNodes is planNodes for the plan Postgres would cache for sql once it
// stops planning each execution (a generic plan, which pgx's statement cache makes
// likely): the query is prepared and explained with plan_cache_mode forcing it.
func (a *testAPI) genericPlanNodes(t testing.TB, sql string, args ...any) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := a.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	params := make([]string, len(args)) // EXECUTE takes literals, not bind parameters
	for i, v := range args {
		if str, ok := v.(string); ok {
			params[i] = "'" + strings.ReplaceAll(str, "'", "''") + "'"
		} else {
			params[i] = fmt.Sprint(v)
		}
	}
	name := fmt.Sprintf("generic_%d", planCounter.Add(1))
	for _, s := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE " + name + " AS " + sql} {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	defer conn.Exec(ctx, "RESET plan_cache_mode; DEALLOCATE "+name)
	return a.explainOn(t, conn.Conn(), "EXECUTE "+name+"("+strings.Join(params, ", ")+")")
}

// TestEventListPlans: on 200,000 events of which 20 are dead, each filter of the
// events list reads an index in id order, in the generic plan too: listing dead
// events walks their small partial index, never the whole table.
func TestEventListPlans(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.exec(t, `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at)
SELECT CASE WHEN g % 3 = 0 THEN 'twilio' ELSE 'generic' END, 'e-' || g, '{}',
       CASE WHEN g % 10000 = 0 THEN 'dead' ELSE 'processed' END, now()
FROM generate_series(1, 200000) AS g`)
	a.exec(t, "ANALYZE inbound_events")
	for name, c := range map[string]struct{ query, index string }{
		"events":                 {"limit=50", "inbound_events_pkey"},
		"events, next page":      {"cursor=" + *cursor{ID: 150000}.encode(), "inbound_events_pkey"},
		"dead events":            {"state=dead", "inbound_events_dead"},
		"dead events, next page": {"state=dead&cursor=" + *cursor{ID: 150000}.encode(), "inbound_events_dead"},
		"a provider's events":    {"provider=twilio", "inbound_events_pkey"},
		"a provider's processed": {"provider=twilio&state=processed", "inbound_events_pkey"},
	} {
		sql, args, _, err := eventsQuery(httptest.NewRequest("GET", "/v1/events?"+c.query, nil))
		if err != nil {
			t.Fatal(err)
		}
		for kind, nodes := range map[string][]string{"custom": a.planNodes(t, sql, args...), "generic": a.genericPlanNodes(t, sql, args...)} {
			joined := strings.Join(nodes, " | ")
			if strings.Contains(joined, "Seq Scan") || strings.Contains(joined, "Sort") || !strings.Contains(joined, c.index) {
				t.Errorf("%s (%s plan): %s, want an in-order scan of %s", name, kind, joined, c.index)
			}
		}
	}
}

package pgtest

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Literal is an argument to Plan written as SQL, for values that have no plain
// literal form in Go's fmt (arrays: Literal("'{a,b}'")).
type Literal string

// WholeIndex marks, in Plan's output, an index scan with no index condition, or, on
// an index of a whole table, none on its first column: one that reads the whole index
// (as a sequential scan would the table), which costs what the table holds, not what
// the statement asks for. (A condition on a later column only, seq = … on (xid, seq),
// is checked on every entry.) A partial index with some condition is not marked: what
// it holds is the statement's to judge (a queue's in-flight rows, say).
const WholeIndex = "(whole index)"

// leadingColumn is the first column of the index $1 of a whole table (empty when it is
// an expression, or the index is partial).
const leadingColumn = `
SELECT coalesce(CASE WHEN i.indpred IS NULL THEN a.attname END, '')
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE c.relname = $1 AND c.relnamespace = 'public'::regnamespace`

// bounded reports whether cond, an Index Cond of index, bounds the scan: any
// condition on a partial or expression index, one on the first column otherwise.
func bounded(ctx context.Context, conn *pgxpool.Conn, index, cond string) (bool, error) {
	if cond == "" {
		return false, nil
	}
	var col string
	if err := conn.QueryRow(ctx, leadingColumn, index).Scan(&col); err != nil {
		return false, fmt.Errorf("the first column of %s: %w", index, err)
	}
	if col == "" {
		return true, nil
	}
	return regexp.MustCompile(`(^|[^a-z_.])(\w+\.)?` + regexp.QuoteMeta(col) + `([^a-z_]|$)`).MatchString(cond), nil
}

// Plan returns the nodes of sql's plan (type, index, relation), depth first. With
// generic, it is the plan Postgres caches once it stops planning each execution (pgx's
// statement cache makes that likely): the query is prepared and explained with
// plan_cache_mode forcing it.
func Plan(t testing.TB, pool *pgxpool.Pool, generic bool, sql string, args ...any) string {
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
			switch v := v.(type) {
			case Literal:
				literals[i] = string(v)
			case string:
				literals[i] = "'" + strings.ReplaceAll(v, "'", "''") + "'"
			case time.Time:
				literals[i] = "'" + v.UTC().Format(time.RFC3339Nano) + "'"
			case []string:
				quoted := make([]string, len(v))
				for j, s := range v {
					quoted[j] = `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
				}
				literals[i] = "'{" + strings.ReplaceAll(strings.Join(quoted, ","), "'", "''") + "}'"
			default:
				literals[i] = fmt.Sprint(v)
			}
		}
		for _, s := range []string{"SET plan_cache_mode = force_generic_plan", "PREPARE generic_plan AS " + sql} {
			if _, err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		defer conn.Exec(ctx, "RESET plan_cache_mode; DEALLOCATE generic_plan")
		explain, args = "EXPLAIN (FORMAT JSON) EXECUTE generic_plan", nil
		if len(literals) > 0 {
			explain += "(" + strings.Join(literals, ", ") + ")"
		}
	}
	var raw []byte
	if err := conn.QueryRow(ctx, explain, args...).Scan(&raw); err != nil {
		t.Fatalf("%s: %v", explain, err)
	}
	type node struct {
		NodeType     string `json:"Node Type"`
		IndexName    string `json:"Index Name"`
		RelationName string `json:"Relation Name"`
		IndexCond    string `json:"Index Cond"`
		Plans        []node `json:"Plans"`
	}
	var plans []struct{ Plan node }
	if err := json.Unmarshal(raw, &plans); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n node)
	walk = func(n node) {
		line := strings.TrimSpace(n.NodeType + " " + n.IndexName + " " + n.RelationName)
		if n.NodeType == "Index Scan" || n.NodeType == "Index Only Scan" || n.NodeType == "Bitmap Index Scan" {
			ok, err := bounded(ctx, conn, n.IndexName, n.IndexCond)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				line += " " + WholeIndex
			}
		}
		out = append(out, line)
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(plans[0].Plan)
	return strings.Join(out, " | ")
}

// GenericPlan is Plan, generic, with NULL for each of sql's parameters ($1 … $n):
// for checking which indexes a statement's cached plan reads, whatever the values.
func GenericPlan(t testing.TB, pool *pgxpool.Pool, sql string) string {
	t.Helper()
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
	nulls := make([]any, n)
	for i := range nulls {
		nulls[i] = Literal("NULL")
	}
	return Plan(t, pool, true, sql, nulls...)
}

// PlanPool is a pool on url whose sessions plan with settings (name, value, name,
// value…: those a package's transactions run with), closed when t ends: for checking
// the plans of statements that run with those settings.
func PlanPool(t testing.TB, url string, settings ...string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(settings); i += 2 {
		cfg.ConnConfig.RuntimeParams[settings[i]] = settings[i+1]
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"inboxd/internal/pgtest"
)

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
		joined := pgtest.Plan(t, a.pool, false, c.sql, c.args...)
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

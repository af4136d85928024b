package api

import (
	"context"
	"io"
	"net/http"
	"testing"
)

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

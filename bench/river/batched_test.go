package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"inboxd/internal/pgtest"
)

// TestBatchedVariants: River batched inserts its jobs with InsertManyTx, batched-copy
// with InsertManyFastTx (COPY); in both, every stored event is in exactly one
// apply_events job, inserted in the commit that stored it, and the jobs process
// every event.
func TestBatchedVariants(t *testing.T) {
	for _, variant := range []string{"batched", "batched-copy"} {
		t.Run(variant, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			_, dbURL := pgtest.NewPool(t)
			if err := setup(ctx, dbURL, false); err != nil {
				t.Fatal(err)
			}
			client, pool, err := newClient(ctx, options{dbURL: dbURL, variant: variant, maxWorkers: 4})
			if err != nil {
				t.Fatal(err)
			}
			defer pool.Close()
			endpoints, ep := genericEndpoints(t)
			mux := http.NewServeMux()
			stop := webhooks(ctx, mux, variant, 0, client, pool, endpoints)
			defer stop()
			srv := httptest.NewServer(mux)
			defer srv.Close()

			const n = 5
			for i := range n {
				body := ep.Example(fmt.Sprintf("m-%d", i), time.Now())
				url := srv.URL + "/webhooks/generic"
				h, err := ep.Sign(secret, url, fmt.Sprintf("evt-%d", i), body, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
				req.Header = h
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("webhook %d: %d, want 200", i, resp.StatusCode)
				}
			}
			var covered, distinct, events int
			err = pool.QueryRow(ctx, `
SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM inbound_events)
FROM (SELECT jsonb_array_elements_text(args->'event_ids')::bigint AS id FROM river_job WHERE kind = 'apply_events') j
WHERE id IN (SELECT id FROM inbound_events)`).Scan(&covered, &distinct, &events)
			if err != nil {
				t.Fatal(err)
			}
			if events != n || covered != n || distinct != n {
				t.Fatalf("%d events stored, %d in jobs (%d distinct); want %d, each in one job", events, covered, distinct, n)
			}
			if err := client.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer client.Stop(context.WithoutCancel(ctx))
			pgtest.Eventually(t, "every event processed", 30*time.Second, func() (bool, error) {
				var processed int
				err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE state = 'processed'`).Scan(&processed)
				return processed == n, err
			})
		})
	}
}

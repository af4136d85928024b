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

// TestIngestVariants: the variants on inboxd's ingest enqueue in the commit that
// stores the events. Per-event: every stored event is in exactly one apply_event job
// that carries its provider, receipt time and payload, and the worker applies what
// the job carries (the test spoils the rows' payloads before the jobs run). Batched
// (InsertManyTx) and batched-copy (InsertManyFastTx, COPY): every stored event is in
// exactly one apply_events job. In all three the jobs process every event.
func TestIngestVariants(t *testing.T) {
	coverage := map[string]string{
		"per-event": `
SELECT count(*), count(DISTINCT e.id), (SELECT count(*) FROM inbound_events)
FROM river_job j JOIN inbound_events e ON e.id = (j.args->>'event_id')::bigint
WHERE j.kind = 'apply_event' AND j.args->>'provider' = e.provider AND (j.args->>'received_at')::timestamptz = e.received_at
  AND j.args->'payload' = e.payload`,
		"batched": `
SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM inbound_events)
FROM (SELECT jsonb_array_elements_text(args->'event_ids')::bigint AS id FROM river_job WHERE kind = 'apply_events') j
WHERE id IN (SELECT id FROM inbound_events)`,
	}
	coverage["batched-copy"] = coverage["batched"]
	for variant, covered := range coverage {
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
			var inJobs, distinct, events int
			if err := pool.QueryRow(ctx, covered).Scan(&inJobs, &distinct, &events); err != nil {
				t.Fatal(err)
			}
			if events != n || inJobs != n || distinct != n {
				t.Fatalf("%d events stored, %d in jobs as they should be (%d distinct); want %d, each in one job", events, inJobs, distinct, n)
			}
			if variant == "per-event" {
				// Applied from the rows, these would be dead (no message id).
				if _, err := pool.Exec(ctx, `UPDATE inbound_events SET payload = '{"type":"message.received","data":{}}'`); err != nil {
					t.Fatal(err)
				}
			}
			if err := client.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer client.Stop(context.WithoutCancel(ctx))
			pgtest.Eventually(t, "every event processed, each with its message", 30*time.Second, func() (bool, error) {
				var processed, messages int
				err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound_events WHERE state = 'processed'), (SELECT count(*) FROM messages)`).Scan(&processed, &messages)
				return processed == n && messages == n, err
			})
		})
	}
}

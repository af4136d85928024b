package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
)

// benchDeliver measures outbound webhooks (docs/consumers.md) to a fast endpoint on
// this machine (answers 204 at once):
//   - the same open-loop rate step twice, without a subscription and with one to every
//     change type, reporting for the second the latency from each message's scheduled
//     send to the endpoint's receipt of its message.created (the whole path), and the
//     CPU per event of both (what deliveries add);
//   - the delivery rate one process sustains: --events changes stored beforehand,
//     replayed to a new subscription, timed from the replay to the last receipt.
func benchDeliver(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	rc, err := newReceiver()
	if err != nil {
		return nil, err
	}
	defer rc.close()
	const token = "bench-admin-token"
	env := []string{"INBOX_ADMIN_TOKENS=" + token, "INBOX_DELIVERY_ALLOW_PRIVATE=true"}
	var results []bench.Result
	for _, subscribed := range []bool{false, true} {
		label := "inboxd, no subscription"
		if subscribed {
			label = "inboxd, one subscription"
		}
		if err := bench.Reset(ctx, pool); err != nil {
			return results, err
		}
		if _, err := pool.Exec(ctx, "DELETE FROM subscriptions"); err != nil {
			return results, err
		}
		srv, err := o.start(ctx, target{name: label, env: env}, dbURL)
		if err != nil {
			return results, err
		}
		cfg := bench.RateConfig{System: label, URL: srv.base, Secret: benchSecret, Rate: o.rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: progress}
		if subscribed {
			if _, err := subscribeID(srv.base, token, rc.url); err != nil {
				srv.stop()
				return results, err
			}
			cfg.Delivered = rc.receipts
		}
		if cfg.CPU, err = bench.NewCPUMeter(ctx, pool, srv.pid); err != nil {
			fmt.Fprintf(progress, "not measuring CPU: %v\n", err)
			cfg.CPU = nil
		}
		r, err := bench.RunRate(ctx, cfg)
		srv.stop()
		if err != nil {
			return results, err
		}
		fmt.Fprintf(progress, "%s: e2e p99 %v, delivered p99 %v (%d not delivered)\n", label, r.EndToEnd.P99, r.Delivered.P99, r.Undelivered)
		results = append(results, r)
	}

	// The delivery rate: a backlog of changes replayed to a new subscription.
	if err := bench.Reset(ctx, pool); err != nil {
		return results, err
	}
	if _, err := pool.Exec(ctx, "DELETE FROM subscriptions"); err != nil {
		return results, err
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO changes (type, conversation_id, data)
SELECT 'message.created', g % 1000, jsonb_build_object('id', g, 'conversation_id', g % 1000, 'provider_message_id', 'backlog-' || g,
       'direction', 'inbound', 'type', 'text', 'text', 'hello, this is message ' || g || ' of the benchmark')
FROM generate_series(1, $1) g`, o.events); err != nil {
		return results, fmt.Errorf("store the backlog of changes: %w", err)
	}
	label := fmt.Sprintf("inboxd, %d changes to one endpoint", o.events)
	srv, err := o.start(ctx, target{name: label, env: env}, dbURL)
	if err != nil {
		return results, err
	}
	defer srv.stop()
	meter, err := bench.NewCPUMeter(ctx, pool, srv.pid)
	if err != nil {
		fmt.Fprintf(progress, "not measuring CPU: %v\n", err)
		meter = nil
	}
	rc.reset()
	id, err := subscribeID(srv.base, token, rc.url)
	if err != nil {
		return results, err
	}
	if meter != nil {
		if err := meter.Start(); err != nil {
			return results, err
		}
	}
	start := time.Now()
	if err := call(srv.base, token, "POST", fmt.Sprintf("/v1/subscriptions/%d/replay", id), `{"from": ""}`, 200, nil); err != nil {
		return results, err
	}
	for rc.count() < o.events {
		if time.Since(start) > 10*time.Minute || ctx.Err() != nil {
			return results, fmt.Errorf("delivered %d of %d changes in 10 minutes", rc.count(), o.events)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	r := bench.Result{System: label, Mode: "deliver", Deliveries: o.events, DeliveriesPerSec: float64(o.events) / took.Seconds()}
	if meter != nil {
		c, err := meter.Stop(o.events)
		if err != nil {
			return results, err
		}
		r.CPU = &c
	}
	fmt.Fprintf(progress, "%s: %.0f deliveries/s\n", label, r.DeliveriesPerSec)
	return append(results, r), nil
}

func subscribeID(base, token, url string) (int64, error) {
	var sub struct{ ID int64 }
	body := fmt.Sprintf(`{"url": %q, "types": ["conversation.created", "message.created", "message.status_changed"]}`, url)
	err := call(base, token, "POST", "/v1/subscriptions", body, http.StatusCreated, &sub)
	return sub.ID, err
}

func call(base, token, method, path, body string, want int, v any) error {
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s %s", method, path, resp.Status, b)
	}
	if v != nil {
		return json.Unmarshal(b, v)
	}
	return nil
}

// receiver is the fast endpoint: it records when each message's message.created
// first arrived and answers 204.
type receiver struct {
	url  string
	srv  *http.Server
	mu   sync.Mutex
	at   map[string]time.Time // provider_message_id → first receipt
	seen map[string]bool      // change ids
}

func newReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rc := &receiver{url: "http://" + ln.Addr().String() + "/hooks"}
	rc.reset()
	rc.srv = &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 10 * time.Second}
	go rc.srv.Serve(ln)
	return rc, nil
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	var c struct {
		ID   string
		Type string
		Data struct {
			ProviderMessageID string `json:"provider_message_id"`
		}
	}
	_ = json.Unmarshal(body, &c)
	rc.mu.Lock()
	rc.seen[c.ID] = true
	if _, ok := rc.at[c.Data.ProviderMessageID]; !ok && c.Type == "message.created" {
		rc.at[c.Data.ProviderMessageID] = now
	}
	rc.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.at, rc.seen = map[string]time.Time{}, map[string]bool{}
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.seen)
}

// receipts waits up to within for every id, then returns the receipt times it has.
func (rc *receiver) receipts(ctx context.Context, ids []string, within time.Duration) map[string]time.Time {
	deadline := time.Now().Add(within)
	for {
		rc.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := rc.at[id]; !ok {
				missing++
			}
		}
		out := make(map[string]time.Time, len(ids))
		if missing == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			for _, id := range ids {
				if at, ok := rc.at[id]; ok {
					out[id] = at
				}
			}
			rc.mu.Unlock()
			return out
		}
		rc.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
}

func (rc *receiver) close() { rc.srv.Close() }

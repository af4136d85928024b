package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
	"inboxd/internal/provider/meta"
)

// Flood sizes (the case of docs/benchmarks.md): eight senders post 100 Meta POSTs of
// 500 messages each, as Meta redelivering a backlog does.
const (
	floodPosts    = 100
	floodSenders  = 8
	floodMessages = 500
	floodSecret   = "bench-meta-app-secret"
)

// benchFloodAck shows what a flood of large POSTs does to small webhooks' answers:
// the same open-loop rate step (--rate single generic events a second) runs twice,
// first alone, then while the flood's POSTs are being acknowledged (they start when
// the measured window does); it reports both steps' acknowledgement latency and
// errors, and the flood's own.
func benchFloodAck(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	var results []bench.Result
	for _, flood := range []bool{false, true} {
		if err := bench.Reset(ctx, pool); err != nil {
			return results, err
		}
		label := fmt.Sprintf("inboxd, %d/s single events", o.rate)
		if flood {
			label += fmt.Sprintf(", beside %d POSTs of %d messages", floodPosts, floodMessages)
		}
		srv, err := o.start(ctx, target{name: label, env: []string{"INBOX_META_APP_SECRET=" + floodSecret, "INBOX_META_VERIFY_TOKEN=bench"}}, dbURL)
		if err != nil {
			return results, err
		}
		var floodResult chan bench.Result
		if flood {
			floodResult = make(chan bench.Result, 1)
			time.AfterFunc(o.warmup, func() { floodResult <- postFlood(ctx, srv.base) })
		}
		r, err := bench.RunRate(ctx, bench.RateConfig{System: label, URL: srv.base, Secret: benchSecret, Rate: o.rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: progress})
		var fr bench.Result
		if flood {
			fr = <-floodResult
		}
		srv.stop()
		if err != nil {
			return results, err
		}
		fmt.Fprintf(progress, "%s: ack p50 %v, p99 %v, %d errors of %d\n", label, r.Ack.P50, r.Ack.P99, r.Errors, r.Requests)
		results = append(results, r)
		if flood {
			fmt.Fprintf(progress, "the flood: %d POSTs, ack p50 %v, p99 %v, %d errors, %.0f events/s\n", fr.Requests, fr.Ack.P50, fr.Ack.P99, fr.Errors, fr.EventsPerSec)
			results = append(results, fr)
		}
	}
	return results, nil
}

// postFlood sends the flood's POSTs from floodSenders senders, each as fast as its
// answers come, and returns their acknowledgement latency, errors, and the events a
// second they were acknowledged at.
func postFlood(ctx context.Context, base string) bench.Result {
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	next := make(chan int, floodPosts)
	for i := range floodPosts {
		next <- i
	}
	close(next)
	began := time.Now()
	var wg sync.WaitGroup
	for range floodSenders {
		wg.Go(func() {
			for i := range next {
				body := floodBody(i)
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/webhooks/meta", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(meta.SignatureHeader, meta.Sign(floodSecret, body))
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				d := time.Since(start)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				if ok {
					lat = append(lat, d)
				} else {
					errs++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	r := bench.Result{System: fmt.Sprintf("meta flood, %d POSTs of %d messages from %d senders", floodPosts, floodMessages, floodSenders),
		Mode: "flood", Requests: floodPosts, Errors: errs, Events: len(lat) * floodMessages,
		EventsPerSec: float64(len(lat)*floodMessages) / took.Seconds(), Ack: bench.Summarize(lat)}
	return r
}

// floodBody is POST i of the flood: one entry with floodMessages messages, each from
// its own contact.
func floodBody(i int) []byte {
	var msgs []string
	now := time.Now().Unix()
	for j := range floodMessages {
		msgs = append(msgs, fmt.Sprintf(`{"from":"1555%07d","id":"wamid.flood-%d-%d","timestamp":"%d","type":"text","text":{"body":"a reply to the campaign, number %d"}}`,
			(i*floodMessages+j)%10000000, i, j, now, j))
	}
	return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"0","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"100000000000001"},"messages":[%s]}}]}]}`,
		strings.Join(msgs, ","))
}

package main

import (
	"bytes"
	"context"
	"errors"
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

// The flood drain case (docs/benchmarks.md, docs/lanes.md): a backlog of
// backlogEvents messages on one Meta channel appears at once (Meta redelivering hours
// of messages after an outage, or a bulk replay), while trickleLanes other channels
// send their steady share of --rate.
const (
	backlogEvents = 100000
	backlogLane   = "meta/100000000000001"
	trickleLanes  = 10
)

// benchFlood measures what a backlog on one lane does to the others: after
// --warmup of the trickle below (unmeasured), backlogEvents
// Meta messages on one channel are committed, in Meta's POSTs' chunks, as fast as the
// database takes them, and then the open-loop step (--rate single generic events a
// second over trickleLanes channels, for --duration) runs while the backlog drains.
// It reports the trickle's latency over the measured window, what was left of the
// backlog when the trickle's last event was processed (not 0 when the window lay
// within the drain), and how fast the backlog drained, from its first commit to its
// last event processed.
func benchFlood(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return nil, err
	}
	label := fmt.Sprintf("inboxd, %d/s over %d channels, beside a %d-event backlog on one", o.rate, trickleLanes, backlogEvents)
	srv, err := o.start(ctx, target{name: label, env: []string{"INBOX_META_APP_SECRET=" + floodSecret, "INBOX_META_VERIFY_TOKEN=bench"}}, dbURL)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	// The ten channels' traffic is steady: it ran before the backlog came, so the
	// server meets the backlog with its connections open and its statements prepared,
	// as in service. This warm-up is not measured.
	if o.warmup > 0 {
		if _, err := bench.RunRate(ctx, bench.RateConfig{System: label + " (warm-up)", URL: srv.base, Secret: benchSecret, Rate: o.rate,
			Duration: o.warmup, Pool: pool, Channels: trickleLanes}); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	first, err := storeBacklog(ctx, pool)
	if err != nil {
		return nil, err
	}
	type drained struct {
		took time.Duration
		err  error
	}
	drain := make(chan drained, 1)
	go func() {
		took, err := waitBacklog(ctx, pool, first)
		drain <- drained{took, err}
	}()
	// No warm-up here: RunRate's waits for its warm-up events to be processed, which
	// without fair claims is after the backlog.
	r, err := bench.RunRate(ctx, bench.RateConfig{System: label, URL: srv.base, Secret: benchSecret, Rate: o.rate,
		Duration: o.duration, Pool: pool, Progress: progress, Channels: trickleLanes})
	left, lerr := backlogLeft(ctx, pool)
	d := <-drain
	if err != nil {
		return nil, err
	}
	if d.err != nil || lerr != nil {
		return nil, errors.Join(d.err, lerr)
	}
	backlog := bench.Result{System: fmt.Sprintf("the backlog: %d Meta messages on %s", backlogEvents, backlogLane), Mode: "flood",
		Events: backlogEvents, EventsPerSec: backlogEvents / d.took.Seconds()}
	fmt.Fprintf(progress, "%s: e2e p50 %v, p99 %v, %d errors of %d\n", label, r.EndToEnd.P50, r.EndToEnd.P99, r.Errors, r.Requests)
	fmt.Fprintf(progress, "the backlog drained in %v: %.0f events/s; %d of it were left when the trickle's last event was processed\n", d.took.Round(time.Millisecond), backlog.EventsPerSec, left)
	return []bench.Result{r, backlog}, nil
}

// storeBacklog commits backlogEvents Meta messages on backlogLane, as the Meta parser
// would have stored them (lane included where the schema has lanes), in commits of
// floodMessages from floodSenders connections at once: the shape of Meta's POSTs of
// a redelivered backlog, stored as fast as the database takes them. It returns when
// the first chunk was committed.
func storeBacklog(ctx context.Context, pool *pgxpool.Pool) (time.Time, error) {
	var lanes bool
	if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = 'inbound_events' AND column_name = 'lane')`).Scan(&lanes); err != nil {
		return time.Time{}, fmt.Errorf("backlog: %w", err)
	}
	insert := `
INSERT INTO inbound_events (provider, external_id, payload%s)
SELECT 'meta', 'wamid.backlog-' || i,
       jsonb_build_object(
           'metadata', jsonb_build_object('display_phone_number', '15550001111', 'phone_number_id', '100000000000001'),
           'contacts', jsonb_build_array(jsonb_build_object('profile', jsonb_build_object('name', 'Customer'), 'wa_id', '1555' || lpad((i %% 20000)::text, 7, '0'))),
           'message', jsonb_build_object('from', '1555' || lpad((i %% 20000)::text, 7, '0'), 'id', 'wamid.backlog-' || i,
               'timestamp', extract(epoch FROM now())::bigint::text, 'type', 'text', 'text', jsonb_build_object('body', 'a reply to the campaign')))%s
FROM generate_series($1::int, $2::int) AS i`
	if lanes {
		insert = fmt.Sprintf(insert, ", lane", ", '"+backlogLane+"'")
	} else {
		insert = fmt.Sprintf(insert, "", "")
	}
	chunks := make(chan int, backlogEvents/floodMessages)
	for i := range backlogEvents / floodMessages {
		chunks <- i * floodMessages
	}
	close(chunks)
	var first time.Time
	var once sync.Once
	var wg sync.WaitGroup
	errs := make(chan error, floodSenders)
	for range floodSenders {
		wg.Go(func() {
			for from := range chunks {
				if _, err := pool.Exec(ctx, insert, from+1, from+floodMessages); err != nil {
					errs <- fmt.Errorf("store the backlog: %w", err)
					return
				}
				once.Do(func() { first = time.Now() })
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return time.Time{}, err
	}
	return first, nil
}

// backlogLeft counts the backlog's events not yet processed, through the queue's
// partial indexes: the history is not read, so polling costs the server little.
func backlogLeft(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var left int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM inbound_events WHERE state = 'pending' AND provider = 'meta') +
       (SELECT count(*) FROM inbound_events WHERE state = 'processing' AND provider = 'meta')`).Scan(&left); err != nil {
		return 0, fmt.Errorf("backlog: %w", err)
	}
	return left, nil
}

// waitBacklog waits until the backlog is processed and returns how long it took from
// its first commit.
func waitBacklog(ctx context.Context, pool *pgxpool.Pool, first time.Time) (time.Duration, error) {
	for {
		left, err := backlogLeft(ctx, pool)
		if err != nil {
			return 0, err
		}
		if left == 0 {
			break
		}
		if time.Since(first) > 10*time.Minute {
			return 0, fmt.Errorf("backlog: %d events still not processed after 10 minutes", left)
		}
		time.Sleep(250 * time.Millisecond)
	}
	var last time.Time
	if err := pool.QueryRow(ctx, `SELECT max(processed_at) FROM inbound_events WHERE provider = 'meta'`).Scan(&last); err != nil {
		return 0, fmt.Errorf("backlog: %w", err)
	}
	return last.Sub(first), nil
}

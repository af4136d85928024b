package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/ingest"
	"inboxd/internal/provider/generic"
)

// RateConfig describes an open-loop run.
type RateConfig struct {
	System string // label for the result
	URL    string // the target's base URL; /webhooks/generic is appended
	// Others are the base URLs of the target's other processes, if it runs several on
	// its database: requests go to URL and each of these in turn.
	Others   []string
	Secret   string        // whsec_ secret the target accepts
	Rate     int           // events per second
	Duration time.Duration // how long to send, measured
	Warmup   time.Duration // how long to send first, not measured
	Pool     *pgxpool.Pool // the target's database, to read processed_at
	Progress io.Writer     // a progress line each second; nil for none
	// CPU, when set, measures the measured part's cost: from its first request to
	// the last event processed.
	CPU *CPUMeter
	// Delivered, when set, returns when a subscriber's endpoint first received the
	// message.created change of each message id given, waiting up to the given time
	// for them: the run then reports the latency from the scheduled send to that
	// receipt (the whole path: ingest, processing, fan-out, delivery).
	Delivered func(ctx context.Context, messageIDs []string, within time.Duration) map[string]time.Time
	// Channels, when above 1, spreads the messages over that many channels (our
	// numbers), each its own lane; otherwise they all go to one.
	Channels int
	// Jobs says the target answers with River job ids and records processing in
	// river_job (bench/river's native variant, which has no inbound_events): an event
	// is processed when its job is completed, at its finalized_at.
	Jobs bool
}

// base is the base URL request i goes to.
func (cfg RateConfig) base(i int) string {
	if n := len(cfg.Others) + 1; i%n > 0 {
		return cfg.Others[i%n-1]
	}
	return cfg.URL
}

// sent is one request's record.
type sent struct {
	scheduled time.Time // when the schedule said to send: latency counts from here
	acked     time.Time
	id        int64
	duplicate bool
	err       bool
	messageID string // the new message's id, when the request carries one
}

// RunRate sends signed generic webhooks at cfg.Rate per second, on schedule whatever
// the replies (open loop: a slow reply cannot delay the next request and hide its
// own latency), then waits for every acknowledged event to be processed and reads
// processed_at from the database. A warm-up at the same rate comes first and is not
// measured: a freshly started server's first second (cold connections, caches and
// statistics) says little about the rate it sustains.
func RunRate(ctx context.Context, cfg RateConfig) (Result, error) {
	if _, err := generic.Signature(cfg.Secret, "probe", 0, nil); err != nil {
		return Result{}, fmt.Errorf("secret: %w", err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute,
	}}
	gen := newGenerator(cfg.Secret)
	gen.channels = max(cfg.Channels, 1)
	// The load generator shares the machine with what it measures: a fixed pool of
	// senders (not a goroutine per request) and less frequent GC keep its share small.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	if cfg.Warmup > 0 {
		warm, _ := openLoop(ctx, client, gen, cfg, cfg.Warmup, nil)
		var ids []int64
		for _, r := range warm {
			if !r.err && !r.duplicate {
				ids = append(ids, r.id)
			}
		}
		if _, err := waitProcessed(ctx, cfg.Pool, cfg.Jobs, ids, 30*time.Second); err != nil {
			return Result{}, err
		}
	}
	if cfg.CPU != nil {
		if err := cfg.CPU.Start(); err != nil {
			return Result{}, err
		}
	}
	records, sendTime := openLoop(ctx, client, gen, cfg, cfg.Duration, cfg.Progress)
	res := Result{System: cfg.System, Mode: "rate", TargetRate: cfg.Rate}
	if err := finishRate(ctx, cfg.Pool, cfg.Jobs, records, sendTime, &res); err != nil {
		return res, err
	}
	if cfg.Delivered != nil {
		finishDelivered(ctx, cfg, records, &res)
	}
	if cfg.CPU != nil {
		c, err := cfg.CPU.Stop(res.EndToEnd.N)
		if err != nil {
			return res, err
		}
		res.CPU = &c
	}
	return res, nil
}

// openLoop sends rate×d requests on schedule and returns what each got.
func openLoop(ctx context.Context, client *http.Client, gen *generator, cfg RateConfig, d time.Duration, progressTo io.Writer) ([]sent, time.Duration) {
	total := int(float64(cfg.Rate) * d.Seconds())
	records := make([]sent, total)
	reqs := make([]request, total)
	interval := time.Second / time.Duration(cfg.Rate)
	var inFlight, done, failed atomic.Int64
	queue := make(chan int, total) // never blocks the schedule: open loop
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for i := range queue {
				inFlight.Add(1)
				post(client, reqs[i], &records[i])
				inFlight.Add(-1)
				done.Add(1)
				if records[i].err {
					failed.Add(1)
				}
			}
		})
	}
	stopProgress := progress(progressTo, cfg.System, total, &done, &failed, &inFlight)
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		reqs[i] = gen.next(cfg.base(i) + "/webhooks/generic")
		records[i].scheduled, records[i].messageID = due, reqs[i].messageID
		queue <- i
	}
	close(queue)
	wg.Wait()
	stopProgress()
	return records, time.Since(start)
}

// post sends one request and records its acknowledgement.
func post(client *http.Client, r request, rec *sent) {
	req, _ := http.NewRequest("POST", r.url, bytes.NewReader(r.body))
	req.Header = r.header
	resp, err := client.Do(req)
	if err != nil {
		rec.err = true
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rec.acked = time.Now()
	var ack struct{ Events []ingest.Result }
	if resp.StatusCode != 200 || json.Unmarshal(body, &ack) != nil || len(ack.Events) != 1 {
		rec.err = true
		return
	}
	rec.id, rec.duplicate = ack.Events[0].ID, ack.Events[0].Duplicate
}

// finishRate waits (up to 30 s) for the acknowledged events to be processed, then
// computes the latencies from the database's processed_at.
//
// End-to-end ends at processed_at, set inside the processing transaction
// (clock_timestamp()), a fraction of a millisecond before its commit, and is reported
// twice: from the acknowledgement (the moment the provider's part is done: what the
// queue adds) and from the scheduled send time (what a message's sender sees, the
// wait for the acknowledgement included). Client and server share this machine's
// clock. Duplicates are answered from the existing row and have no
// processing of their own, so they count in ack latency only.
func finishRate(ctx context.Context, pool *pgxpool.Pool, jobs bool, records []sent, sendTime time.Duration, res *Result) error {
	var ids []int64
	var acks []time.Duration
	for _, r := range records {
		switch {
		case r.scheduled.IsZero():
		case r.err:
			res.Errors++
		default:
			res.Requests++
			acks = append(acks, r.acked.Sub(r.scheduled))
			if r.duplicate {
				res.Duplicates++
			} else {
				ids = append(ids, r.id)
			}
		}
	}
	res.Requests += res.Errors
	res.AchievedRate = float64(len(acks)) / sendTime.Seconds()
	res.Ack = Summarize(acks)
	processed, err := waitProcessed(ctx, pool, jobs, ids, 30*time.Second)
	if err != nil {
		return err
	}
	var e2e, fromSchedule []time.Duration
	for _, r := range records {
		if r.err || r.duplicate || r.scheduled.IsZero() {
			continue
		}
		at, ok := processed[r.id]
		if !ok {
			res.Unprocessed++
			continue
		}
		e2e = append(e2e, max(at.Sub(r.acked), 0)) // processed before the 200 arrived counts as 0
		fromSchedule = append(fromSchedule, at.Sub(r.scheduled))
	}
	res.EndToEnd = Summarize(e2e)
	res.FromSchedule = Summarize(fromSchedule)
	return nil
}

// finishDelivered reads when the subscriber received each new message of the run
// (a redelivery's message was received for its first request: it is left out).
func finishDelivered(ctx context.Context, cfg RateConfig, records []sent, res *Result) {
	seen := map[string]bool{}
	var ids []string
	for _, r := range records {
		if r.messageID != "" && !r.err && !r.duplicate && !r.scheduled.IsZero() && !seen[r.messageID] {
			seen[r.messageID] = true
			ids = append(ids, r.messageID)
		}
	}
	got := cfg.Delivered(ctx, ids, 30*time.Second)
	var lat []time.Duration
	for _, r := range records {
		if !seen[r.messageID] {
			continue
		}
		delete(seen, r.messageID)
		if at, ok := got[r.messageID]; ok {
			lat = append(lat, at.Sub(r.scheduled))
		} else {
			res.Undelivered++
		}
	}
	res.Delivered = Summarize(lat)
}

// The probes waitProcessed asks: how many of the ids are still open, and when the
// others were processed; of events, or (jobs) of River jobs.
const (
	openEvents = "SELECT count(*) FROM inbound_events WHERE id = ANY($1) AND processed_at IS NULL"
	doneEvents = "SELECT id, processed_at FROM inbound_events WHERE id = ANY($1) AND processed_at IS NOT NULL"
	openJobs   = "SELECT count(*) FROM river_job WHERE id = ANY($1) AND state <> 'completed'"
	doneJobs   = "SELECT id, finalized_at FROM river_job WHERE id = ANY($1) AND state = 'completed'"
)

// waitProcessed waits up to within for the events ids to be processed, and returns
// when each was.
func waitProcessed(ctx context.Context, pool *pgxpool.Pool, jobs bool, ids []int64, within time.Duration) (map[int64]time.Time, error) {
	openQuery, doneQuery := openEvents, doneEvents
	if jobs {
		openQuery, doneQuery = openJobs, doneJobs
	}
	deadline := time.Now().Add(within)
	for {
		var open int
		err := pool.QueryRow(ctx, openQuery, ids).Scan(&open)
		if err != nil {
			return nil, fmt.Errorf("wait for processing: %w", err)
		}
		if open == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	rows, err := pool.Query(ctx, doneQuery, ids)
	if err != nil {
		return nil, fmt.Errorf("read processed_at: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]time.Time, len(ids))
	for rows.Next() {
		var id int64
		var at time.Time
		if err := rows.Scan(&id, &at); err != nil {
			return nil, err
		}
		out[id] = at
	}
	return out, rows.Err()
}

// progress prints a line every second until the returned stop is called.
func progress(w io.Writer, label string, total int, done, failed, inFlight *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				fmt.Fprintln(w)
				return
			case <-t.C:
				fmt.Fprintf(w, "\r%s: %d/%d answered, %d errors, %d in flight   ", label, done.Load(), total, failed.Load(), inFlight.Load())
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

// request is a ready-to-send webhook.
type request struct {
	url       string
	body      []byte
	header    http.Header
	messageID string // a new message's id ("" for statuses and redeliveries)
}

// generator makes a realistic mix: 30% messages from new contacts, 45% replies in
// existing conversations (half of them outbound), 20% status updates of outbound
// messages, 5% redeliveries of an earlier webhook (same id and body, new signature).
type generator struct {
	secret   string
	rng      *rand.Rand
	n        int
	contacts []string
	outbound []string
	history  []struct{ id, body string }
	channels int // messages go to this many channels in turn
}

func newGenerator(secret string) *generator {
	return &generator{secret: secret, rng: rand.New(rand.NewPCG(1, 2)), contacts: []string{"+15550000000"}}
}

// next builds the next request. The mix exercises what real traffic does: new
// conversations (inserts), replies (conversation row updates under concurrency),
// statuses (message updates, and statuses racing their message), redeliveries (the
// duplicate path). Ids carry the time so that runs against a reused database do not
// collide.
func (g *generator) next(url string) request {
	g.n++
	id, body, msgID := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), g.n), "", ""
	now := time.Now().UTC().Format(time.RFC3339Nano)
	switch roll := g.rng.IntN(100); {
	case roll < 5 && len(g.history) > 0:
		h := g.history[g.rng.IntN(len(g.history))]
		id, body = h.id, h.body
	case roll < 25 && len(g.outbound) > 0:
		msg := g.outbound[g.rng.IntN(len(g.outbound))]
		status := []string{"delivered", "read"}[g.rng.IntN(2)]
		body = fmt.Sprintf(`{"type":"message.status","timestamp":%q,"data":{"message_id":%q,"status":%q}}`, now, msg, status)
	case roll < 55:
		g.contacts = append(g.contacts, fmt.Sprintf("+1555%07d", len(g.contacts)))
		body, msgID = g.message("message.received", g.contacts[len(g.contacts)-1], now)
	default:
		typ := []string{"message.received", "message.sent"}[g.rng.IntN(2)]
		body, msgID = g.message(typ, g.contacts[g.rng.IntN(len(g.contacts))], now)
	}
	if len(g.history) < 10000 {
		g.history = append(g.history, struct{ id, body string }{id, body})
	}
	h, _ := generic.Headers(g.secret, id, time.Now(), []byte(body)) // the secret was checked in RunRate
	return request{url: url, body: []byte(body), header: h, messageID: msgID}
}

func (g *generator) message(typ, contact, now string) (body, msgID string) {
	msgID = fmt.Sprintf("m-%d-%d", time.Now().UnixNano(), g.n)
	if typ == "message.sent" && len(g.outbound) < 10000 {
		g.outbound = append(g.outbound, msgID)
	}
	channel := "+15550001111"
	if g.channels > 1 {
		channel = fmt.Sprintf("+1555002%04d", g.n%g.channels)
	}
	return fmt.Sprintf(`{"type":%q,"timestamp":%q,"data":{"message_id":%q,"channel":%q,"contact":%q,"text":"hello, this is message %d of the benchmark"}}`,
		typ, now, msgID, channel, contact, g.n), msgID
}

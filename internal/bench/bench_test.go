package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"inboxd/internal/api"
	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
	"inboxd/internal/provider/providertest"
)

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestSummarize(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	got := Summarize(ds)
	want := Latency{N: 100, P50: 50 * time.Millisecond, P95: 95 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("Summarize(1..100 ms) = %+v, want %+v", got, want)
	}
	if (Summarize(nil) != Latency{}) {
		t.Errorf("Summarize(nil) is not zero")
	}
	b, _ := json.Marshal(got)
	var back Latency
	if err := json.Unmarshal(b, &back); err != nil || back != got {
		t.Errorf("JSON round trip: %s -> %+v (%v)", b, back, err)
	}
}

// TestRateAgainstTheRealService: a short open-loop run against the real router and
// processor; every request answered, every new event processed and timed.
func TestRateAgainstTheRealService(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	proc := processor.New(pool, url, processor.Config{}, zap.NewNop(), processor.NewMetrics(reg))
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(reg), ingest.WriterConfig{OnCommit: proc.Committed})
	hooks := ingest.NewHandlers(ingest.Config{Endpoints: providertest.Endpoints(t, "http://x", map[string]string{"GENERIC_SECRETS": testSecret})}, w, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	wg.Go(func() { proc.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	srv := httptest.NewServer(api.NewRouter(api.Deps{Pool: pool, Webhooks: hooks, Gatherer: reg, Log: zap.NewNop()}))
	defer srv.Close()

	r, err := RunRate(ctx, RateConfig{System: "inboxd", URL: srv.URL, Secret: testSecret, Rate: 200, Duration: time.Second, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 200 || r.Errors != 0 || r.Unprocessed != 0 || r.Duplicates == 0 ||
		r.EndToEnd.N+r.Duplicates != r.Requests || r.Ack.N != r.Requests || r.EndToEnd.P99 <= 0 {
		t.Errorf("result %+v: want 200 requests, no errors, some duplicates, every new event timed", r)
	}
	var stored int
	pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state = 'processed'").Scan(&stored)
	if stored != r.EndToEnd.N {
		t.Errorf("%d events processed in the database, %d timed", stored, r.EndToEnd.N)
	}
}

func TestDrainAndCeiling(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	if err := FillEvents(ctx, pool, 500); err != nil {
		t.Fatal(err)
	}
	p := processor.New(pool, url, processor.Config{}, zap.NewNop(), processor.NewMetrics(nil))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	r, err := Drain(ctx, "inboxd", pool, 500, nil, func() error { go func() { p.Run(runCtx); close(done) }(); return nil }, false)
	stop()
	<-done
	if err != nil || r.Events != 500 || r.EventsPerSec <= 0 {
		t.Errorf("Drain = %+v, %v", r, err)
	}
	var messages int
	pool.QueryRow(ctx, "SELECT count(*) FROM messages").Scan(&messages)
	if messages != 500 {
		t.Errorf("%d messages after draining 500 events", messages)
	}
	c, err := Ceiling(ctx, pool, 2, 300*time.Millisecond)
	if err != nil || c.CommitsPerSec <= 0 || c.NotifyCommitsPerS <= 0 {
		t.Errorf("Ceiling = %+v, %v", c, err)
	}
}

func TestReport(t *testing.T) {
	results := []Result{
		{System: "postgres", Mode: "ceiling", Clients: 16, CommitsPerSec: 10000, NotifyCommitsPerS: 3000},
		{System: "inboxd", Mode: "drain", Events: 100, EventsPerSec: 1000},
		{System: "river", Mode: "drain", Events: 100, EventsPerSec: 100},
		{System: "inboxd", Mode: "rate", TargetRate: 1000, AchievedRate: 1000, EndToEnd: Latency{P50: time.Millisecond, P95: 5 * time.Millisecond, P99: 9 * time.Millisecond}},
		{System: "inboxd", Mode: "rate", TargetRate: 2000, AchievedRate: 1500, EndToEnd: Latency{P99: 200 * time.Millisecond}},
	}
	var table bytes.Buffer
	PrintTable(&table, results)
	for _, want := range []string{"10000", "10.00x", "9.0"} {
		if !bytes.Contains(table.Bytes(), []byte(want)) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if !Passes(results[3], 100) || Passes(results[4], 100) {
		t.Errorf("Passes: the 1,000/s step passes and the 2,000/s step (p99 200 ms, rate not achieved) does not")
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, results); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&svg)
	for {
		if _, err := dec.Token(); err != nil {
			if err.Error() != "EOF" {
				t.Errorf("SVG is not well-formed XML: %v", err)
			}
			break
		}
	}
}

func TestParseStat(t *testing.T) {
	// proc(5): the name may hold spaces and parentheses; fields count from the last ')'.
	line := []byte("4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 30 7 3 20 0 1 0 1000 0 0 18446744073709551615")
	st, err := parseStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.own != 280 || st.children != 10 {
		t.Errorf("parseStat = %+v, want ppid 17, own 250+30, children 7+3", st)
	}
	if _, err := parseStat([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("a truncated line parsed")
	}
}

// TestCPUMeter: the meter finds the Postgres server behind a pool and counts the CPU
// this process burns as the target's. The server is a private cluster, so that it is
// a process of this machine wherever the test server is (INBOXD_TEST_DATABASE_URL).
func TestCPUMeter(t *testing.T) {
	t.Parallel()
	cluster := pgtest.StartCluster(t)
	pool, err := pgxpool.New(context.Background(), cluster.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	m, err := NewCPUMeter(context.Background(), pool, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	m.Follow(os.Getpid())
	for start := time.Now(); time.Since(start) < 200*time.Millisecond; {
	}
	c, err := m.Stop(1000)
	if err != nil {
		t.Fatal(err)
	}
	if c.TargetMs <= 0 || c.GeneratorMs <= 0 || c.PerThousand < c.TargetMs {
		t.Errorf("CPU = %+v: want this process's time counted as the target's and the generator's", c)
	}
}

func TestMedianCost(t *testing.T) {
	run := func(perThousand float64, p99 time.Duration) Result {
		return Result{System: "inboxd", Mode: "rate", TargetRate: 1000, CPU: &CPU{PerThousand: perThousand}, EndToEnd: Latency{P99: p99}}
	}
	runs := []Result{run(520, 3*time.Millisecond), run(430, 2*time.Millisecond), run(470, 9*time.Millisecond)}
	m := MedianCost(runs)
	if m.Mode != "cost" || m.Runs != 3 || m.CPU.PerThousand != 470 || m.EndToEnd.P99 != 9*time.Millisecond {
		t.Errorf("median = %+v, want the 470 run (its own latency), mode cost, 3 runs", m)
	}
	if len(m.CPURange) != 2 || m.CPURange[0] != 430 || m.CPURange[1] != 520 {
		t.Errorf("range = %v, want [430 520]", m.CPURange)
	}
	if runs[0].CPU.PerThousand != 520 || runs[0].Mode != "rate" {
		t.Errorf("MedianCost changed its input: %+v", runs[0])
	}
	var table bytes.Buffer
	PrintTable(&table, []Result{m})
	if !bytes.Contains(table.Bytes(), []byte("430–520")) {
		t.Errorf("cost table lacks the range:\n%s", table.String())
	}
}

// TestRequestsSpreadOverProcesses: with several processes, requests go to each in
// turn; with one, all to it.
func TestRequestsSpreadOverProcesses(t *testing.T) {
	cfg := RateConfig{URL: "a", Others: []string{"b", "c"}}
	var got []string
	for i := range 7 {
		got = append(got, cfg.base(i))
	}
	if fmt.Sprint(got) != "[a b c a b c a]" {
		t.Errorf("bases = %v", got)
	}
	if one := (RateConfig{URL: "a"}); one.base(0) != "a" || one.base(5) != "a" {
		t.Error("one process: not every request went to it")
	}
}

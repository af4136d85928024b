package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
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
	// Ten values: the 95th percentile is the 10th (nearest rank, 9.5 rounded up).
	ten := make([]time.Duration, 10)
	for i := range ten {
		ten[i] = time.Duration(i+1) * time.Millisecond
	}
	if got := Summarize(ten); got.P95 != 10*time.Millisecond || got.P50 != 5*time.Millisecond {
		t.Errorf("Summarize(1..10 ms) = %+v, want p50 5 ms and p95 10 ms", got)
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

// TestSummarizeRuns: the median run by CPU (its own latency), each figure's median and
// interquartile range over the runs, unprocessed events summed, the lowest rate
// kept; a drain's median run is by events/s.
func TestSummarizeRuns(t *testing.T) {
	run := func(perThousand, wal float64, p99 time.Duration, unprocessed int) Result {
		return Result{System: "inboxd", Mode: "rate", TargetRate: 1000, AchievedRate: 990 + perThousand/100, Unprocessed: unprocessed,
			CPU: &CPU{PerThousand: perThousand, WALPerEvent: wal}, FromSchedule: Latency{P99: p99}}
	}
	runs := []Result{
		run(520, 3000, 30*time.Millisecond, 0), run(430, 3100, 20*time.Millisecond, 2), run(470, 2900, 90*time.Millisecond, 0),
		run(500, 3050, 10*time.Millisecond, 0), run(440, 2950, 40*time.Millisecond, 1),
	}
	m := SummarizeRuns("cost", runs)
	if m.Mode != "cost" || m.Runs != 5 || m.CPU.PerThousand != 470 || m.FromSchedule.P99 != 90*time.Millisecond {
		t.Errorf("summary = %+v, want the 470 run (its own latency), mode cost, 5 runs", m)
	}
	// sorted CPU 430 440 [470] 500 520: Q1 = median(430, 440), Q3 = median(500, 520)
	if want := (Spread{Median: 470, Q1: 435, Q3: 510, Runs: 5}); *m.CPUSpread != want {
		t.Errorf("CPU spread = %+v, want %+v", *m.CPUSpread, want)
	}
	if want := (Spread{Median: 3000, Q1: 2925, Q3: 3075, Runs: 5}); *m.WALSpread != want {
		t.Errorf("WAL spread = %+v, want %+v", *m.WALSpread, want)
	}
	if want := (Spread{Median: 30, Q1: 15, Q3: 65, Runs: 5}); *m.P99Spread != want {
		t.Errorf("p99 spread = %+v, want %+v", *m.P99Spread, want)
	}
	if m.Unprocessed != 3 || m.LowestRate != 994.3 {
		t.Errorf("unprocessed %d, lowest rate %v; want 3 (summed), 994.3", m.Unprocessed, m.LowestRate)
	}
	if runs[0].CPU.PerThousand != 520 || runs[0].Mode != "rate" {
		t.Errorf("SummarizeRuns changed its input: %+v", runs[0])
	}
	drains := []Result{{EventsPerSec: 9000, CPU: &CPU{PerThousand: 300}}, {EventsPerSec: 7000, CPU: &CPU{PerThousand: 200}}, {EventsPerSec: 8000, CPU: &CPU{PerThousand: 100}}}
	if d := SummarizeRuns("drain", drains); d.EventsPerSec != 8000 || d.RateSpread.Median != 8000 || d.CPUSpread.Median != 200 {
		t.Errorf("drain summary: %+v (rate %+v, CPU %+v), want the 8,000/s run, medians 8,000/s and 200", d, d.RateSpread, d.CPUSpread)
	}
	var table bytes.Buffer
	PrintTable(&table, []Result{m})
	if !bytes.Contains(table.Bytes(), []byte("470 (435–510)")) {
		t.Errorf("cost table lacks the median and its interquartile range:\n%s", table.String())
	}
	// One run has no range: its figures stand alone.
	one := SummarizeRuns("drain", drains[:1])
	if *one.RateSpread != (Spread{Median: 9000, Q1: 9000, Q3: 9000, Runs: 1}) {
		t.Errorf("one drain's rate spread = %+v, want its own rate, one run", *one.RateSpread)
	}
	table.Reset()
	PrintTable(&table, []Result{one})
	if !bytes.Contains(table.Bytes(), []byte(" 9000 ")) || bytes.Contains(table.Bytes(), []byte("(9000")) {
		t.Errorf("one drain's table shows a range:\n%s", table.String())
	}
}

func TestApart(t *testing.T) {
	for _, c := range []struct {
		a, b Spread
		want bool
	}{
		{Spread{Q1: 1, Q3: 2}, Spread{Q1: 3, Q3: 4}, true},
		{Spread{Q1: 3, Q3: 4}, Spread{Q1: 1, Q3: 2}, true},
		{Spread{Q1: 1, Q3: 3}, Spread{Q1: 2, Q3: 4}, false},
		{Spread{Q1: 1, Q3: 2}, Spread{Q1: 2, Q3: 4}, false},           // touching ranges overlap
		{SpreadOf([]float64{1}), SpreadOf([]float64{3, 4, 5}), false}, // one run has no range
		{SpreadOf([]float64{1, 2, 2}), SpreadOf([]float64{3, 4, 5}), true},
	} {
		if got := Apart(c.a, c.b); got != c.want {
			t.Errorf("Apart(%+v, %+v) = %v, want %v", c.a, c.b, got, c.want)
		}
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

// TestMarkdown: the doc's tables and the README's line come from the summaries; a
// difference is called apart only where the interquartile ranges do not overlap.
func TestMarkdown(t *testing.T) {
	summary := func(system, mode string, rate int, cpu, wal, eps Spread) Result {
		return Result{System: system, Mode: mode, TargetRate: rate, Runs: 7, EventsPerSec: eps.Median, CPU: &CPU{PerThousand: cpu.Median, WALPerEvent: wal.Median},
			CPUSpread: &cpu, WALSpread: &wal, RateSpread: &eps, P99Spread: &Spread{Median: 10, Q1: 9, Q3: 11}, LowestRate: float64(rate)}
	}
	results := []Result{
		summary("inboxd", "drain", 0, Spread{100, 90, 110, 7}, Spread{2500, 2490, 2510, 7}, Spread{9000, 8800, 9200, 7}),
		summary("river-batched", "drain", 0, Spread{100, 95, 105, 7}, Spread{2000, 1990, 2010, 7}, Spread{6000, 5800, 6200, 7}),
		summary("inboxd", "cost", 1000, Spread{900, 880, 950, 7}, Spread{3100, 3090, 3110, 7}, Spread{}),
		summary("river-batched", "cost", 1000, Spread{920, 900, 960, 7}, Spread{3200, 3190, 3210, 7}, Spread{}),
		// Without Postgres on the machine a rate has no CPU figures, and a summary of
		// an older format has no spread; neither is compared.
		{System: "river-per-event", Mode: "cost", TargetRate: 1000, Runs: 7},
		{System: "river-per-event", Mode: "drain", Runs: 7, EventsPerSec: 5000},
		// River's no-op: one timed drain.
		{System: "river-noop", Mode: "drain", EventsPerSec: 15841, Events: 200000},
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, results); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| river-batched | drain events/s | 9000 (8800–9200) | 6000 (5800–6200) | 1.50× | apart |",
		"| river-batched | CPU ms per 1,000 events at 1000/s | 900 (880–950) | 920 (900–960) | 0.98× | ranges overlap |",
		"| river-batched | WAL B/event at 1000/s | 3100 (3090–3110) | 3200 (3190–3210) | 0.97× | apart |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	printed := slices.ContainsFunc(strings.Split(md.String(), "\n"), func(l string) bool {
		return strings.Contains(l, "river-noop") && strings.Contains(l, "200000")
	})
	if !strings.Contains(md.String(), "| river-noop | - | 1 | 15841 | - | - |") || !printed {
		t.Errorf("markdown lacks River's no-op drain as one run, in the drains and in the printed table:\n%s", md.String())
	}
	if !strings.Contains(md.String(), "| river-per-event | 1000 | 7 | - | - |") {
		t.Errorf("markdown shows CPU figures of a rate that has none:\n%s", md.String())
	}
	if strings.Contains(md.String(), "| river-noop | drain") || strings.Contains(md.String(), "| river-per-event | drain events/s") || strings.Contains(md.String(), "| river-per-event | CPU") {
		t.Errorf("markdown compares a system without repeated runs' spreads:\n%s", md.String())
	}
	line := Headline(results, "river-batched")
	if !strings.Contains(line, "medians of 7 interleaved runs") || !strings.Contains(line, "drain events/s 1.50× (apart)") ||
		!strings.Contains(line, "CPU ms per 1,000 events at 1000/s 0.98× (within the noise)") || strings.Contains(line, "p99") {
		t.Errorf("headline: %s; want the drain and the CPU, not the p99", line)
	}
	if line := Headline(results, "river-native"); line != "" {
		t.Errorf("headline against a system not run: %q, want none", line)
	}
	for _, c := range []struct {
		a, b float64
		want string
	}{{441, 46794, "0.0094×"}, {46, 1000, "0.046×"}, {999, 927, "1.08×"}} {
		if r := ratio(c.a, c.b); r != c.want {
			t.Errorf("ratio(%g, %g) = %s, want %s (two significant digits below 0.1)", c.a, c.b, r, c.want)
		}
	}
}

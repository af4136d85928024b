package processor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
)

// TestMain doubles as a child process for crash tests: with INBOXD_TEST_CHILD set, the
// test binary runs a processor (see runChild) instead of the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("INBOXD_TEST_CHILD"); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(pgtest.Main(m))
}

// start runs a processor on its own pool (as a separate process would have) until
// the test ends, and returns it.
func start(t *testing.T, url string, cfg Config) *Processor {
	t.Helper()
	p, _ := startWithRegistry(t, url, cfg)
	return p
}

// startWithRegistry is start, also returning the registry holding its metrics.
func startWithRegistry(t *testing.T, url string, cfg Config) (*Processor, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return startConfigured(t, url, cfg, func(*Processor) {}, reg), reg
}

// startConfigured is start with configure run on the processor before it runs.
func startConfigured(t *testing.T, url string, cfg Config, configure func(*Processor), reg ...*prometheus.Registry) *Processor {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 100 * time.Millisecond
	}
	r := prometheus.NewRegistry()
	if len(reg) > 0 {
		r = reg[0]
	}
	p := New(pool, url, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), NewMetrics(r))
	configure(p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v at stop, want nil", err)
		}
		pool.Close()
	})
	return p
}

// insertEvents stores generic events directly (the processor's input is the table,
// not HTTP). Each payload is a JSON object literal.
func insertEvents(t testing.TB, pool *pgxpool.Pool, payloads ...string) {
	t.Helper()
	ids := make([]string, len(payloads))
	for i := range payloads {
		ids[i] = fmt.Sprintf("evt-%d-%d", time.Now().UnixNano(), i)
	}
	_, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', id, payload::jsonb FROM unnest($1::text[], $2::text[]) AS t(id, payload)`, ids, payloads)
	if err != nil {
		t.Fatalf("insert events: %v", err)
	}
}

func received(msgID, text string, at time.Time) string {
	return fmt.Sprintf(`{"type":"message.received","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":%q}}`,
		at.UTC().Format(time.RFC3339Nano), msgID, text)
}

func sent(msgID, contact string, at time.Time) string {
	return fmt.Sprintf(`{"type":"message.sent","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":%q,"text":"out"}}`,
		at.UTC().Format(time.RFC3339Nano), msgID, contact)
}

func status(msgID, st string, at time.Time) string {
	return fmt.Sprintf(`{"type":"message.status","timestamp":%q,"data":{"message_id":%q,"status":%q}}`,
		at.UTC().Format(time.RFC3339Nano), msgID, st)
}

// queueCounts returns the number of events per state.
func queueCounts(ctx context.Context, pool *pgxpool.Pool) (map[string]int, error) {
	rows, err := pool.Query(ctx, "SELECT state, count::int FROM inbox_queue_stats")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		counts[s] = n
	}
	return counts, rows.Err()
}

// waitSettled waits until no event is pending or processing.
func waitSettled(t testing.TB, pool *pgxpool.Pool, within time.Duration) map[string]int {
	t.Helper()
	var counts map[string]int
	pgtest.Eventually(t, "queue settled", within, func() (bool, error) {
		var err error
		counts, err = queueCounts(context.Background(), pool)
		return err == nil && counts["pending"] == 0 && counts["processing"] == 0, err
	})
	return counts
}

// runChild is the crash-test child: a processor whose generic normalizer misbehaves
// on purpose. Modes:
//   - "poison": exits the process (like a segfault or OOM kill) on message "poison".
//   - "hang":   prints "claimed" and blocks forever, so the parent can kill -9 it
//     mid-batch.
//
// It exits 0 once the queue holds nothing pending or processing.
func runChild(mode string) int {
	url := os.Getenv("DATABASE_URL")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	norm := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		switch {
		case mode == "poison" && n.Message != nil && n.Message.ID == "poison":
			os.Exit(3)
		case mode == "hang":
			fmt.Println("claimed")
			select {}
		}
		return n, err
	}
	p := New(pool, url, Config{
		Lease: 300 * time.Millisecond, SweepInterval: 50 * time.Millisecond, MaxAttempts: 3, BatchSize: 50,
		Normalizers: map[string]provider.Normalizer{"generic": norm},
	}, zap.NewNop(), NewMetrics(prometheus.NewRegistry()))
	go p.Run(ctx)
	for {
		time.Sleep(50 * time.Millisecond)
		counts, err := queueCounts(ctx, pool)
		if err == nil && counts["pending"] == 0 && counts["processing"] == 0 {
			return 0
		}
	}
}

// child starts the test binary as a crash-test child on url.
func child(t *testing.T, mode, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "INBOXD_TEST_CHILD="+mode, "DATABASE_URL="+url)
	cmd.Stderr = os.Stderr
	return cmd
}

func newDB(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	return pgtest.NewPool(t)
}

func zapNop() *zap.Logger { return zap.NewNop() }

// counter returns the value of a counter in reg with the given label value.
func counter(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

package processor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
)

// TestTransactionSettings: the processor's transactions (claims, applies with
// messages and statuses, and the one-by-one fallback, which is an explicit
// transaction) draw no notice from the server: SET LOCAL in the implicit transaction
// of a pipelined batch answers a WARNING per setting, also written to the server's
// log. And their statements are planned once per connection, not per execution
// (plan_cache_mode force_generic_plan): no custom plan is ever made.
func TestTransactionSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, url := newDB(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	notices := pgtest.CollectNotices(cfg)
	cfg.MaxConns = 1 // one session, to read its prepared statements afterwards
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	withNUL := func(payload []byte, at time.Time) (provider.Normalized, error) {
		n, err := generic.Normalize(payload, at)
		if err == nil && n.Message != nil && n.Message.Text == "nul" {
			n.Message.Text = "a\x00b" // Postgres refuses it: the batch falls back to one by one
		}
		return n, err
	}
	p := New(pool, url, Config{BatchSize: 4, Workers: 1, Normalizers: map[string]provider.Normalizer{"generic": withNUL}},
		zapNop(), NewMetrics(prometheus.NewRegistry()))
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer stop()

	t0 := time.Now()
	for i := range 10 { // more than the five custom plans plan_cache_mode=auto starts with
		insertEvents(t, db, sent(fmt.Sprintf("m-%d", i), "+15552223333", t0), status(fmt.Sprintf("m-%d", i), "read", t0),
			received(fmt.Sprintf("bad-%d", i), "nul", t0))
		waitSettled(t, db, 10*time.Second)
	}
	stop()
	<-done

	if n := notices(); len(n) > 0 {
		t.Errorf("the processor's transactions drew %d notices, first: %s", len(n), n[0])
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var generic, custom int
	if err := conn.QueryRow(ctx, "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0) FROM pg_prepared_statements").Scan(&generic, &custom); err != nil {
		t.Fatal(err)
	}
	if generic == 0 || custom > 0 {
		t.Errorf("prepared statements ran %d generic and %d custom plans, want only generic ones", generic, custom)
	}
}

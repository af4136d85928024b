package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
)

// benchRetention shows what retention costs the live traffic: on a table holding
// --rows processed events older than the default INBOX_RETENTION, the same open-loop
// rate step runs twice, first with retention off and then while retention deletes
// that history, and reports both steps' latencies and how fast retention deleted.
func benchRetention(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "storing %d processed events older than the retention...\n", o.rows)
	if err := bench.FillHistory(ctx, pool, o.rows, 8*24*time.Hour); err != nil {
		return nil, err
	}
	var results []bench.Result
	for _, step := range []struct {
		label string
		env   []string
	}{
		{fmt.Sprintf("inboxd, %d old rows, retention off", o.rows), []string{"INBOX_RETENTION=0"}},
		{fmt.Sprintf("inboxd, %d old rows, retention deleting", o.rows), nil}, // the default
	} {
		srv, err := o.start(ctx, target{name: step.label, env: step.env}, dbURL)
		if err != nil {
			return results, err
		}
		base := srv.base
		start := time.Now()
		r, err := bench.RunRate(ctx, bench.RateConfig{System: step.label, URL: base, Secret: benchSecret, Rate: o.rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: progress})
		if err == nil {
			r.Deleted, err = deletedSoFar(base)
			r.DeletedPerSec = float64(r.Deleted) / time.Since(start).Seconds()
		}
		srv.stop()
		if err != nil {
			return results, err
		}
		fmt.Fprintf(progress, "%s: ack p99 %v, e2e p99 %v, retention deleted %d rows (%.0f/s)\n",
			step.label, r.Ack.P99, r.EndToEnd.P99, r.Deleted, r.DeletedPerSec)
		results = append(results, r)
	}
	return results, nil
}

// deletedSoFar reads inbox_retention_deleted_total{what="processed_events"} from the
// target's /metrics.
func deletedSoFar(base string) (int64, error) {
	// The counter appears with its first deletion: until then, nothing was deleted.
	v, _, err := bench.Metric(base, `inbox_retention_deleted_total{what="processed_events"}`)
	return int64(v), err
}

// benchGrowth runs steady load with a short INBOX_RETENTION (--retention) and samples
// the table every ten seconds: it grows for the retention period, then stays level.
func benchGrowth(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) (bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return bench.Result{}, err
	}
	srv, err := o.start(ctx, target{name: "inboxd", env: []string{"INBOX_RETENTION=" + o.retention.String()}}, dbURL)
	if err != nil {
		return bench.Result{}, err
	}
	defer srv.stop()
	base := srv.base
	var samples []bench.Sample
	sampling, stopSampling := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for t := time.NewTicker(10 * time.Second); ; {
			if s, err := bench.TakeSample(ctx, pool, time.Since(start).Round(time.Second)); err == nil {
				samples = append(samples, s)
				fmt.Fprintf(progress, "\n%.0fs: %d rows, %.1f MB", s.AtSeconds, s.Rows, float64(s.Bytes)/1e6)
			}
			select {
			case <-sampling.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}()
	r, err := bench.RunRate(ctx, bench.RateConfig{System: "inboxd, INBOX_RETENTION=" + o.retention.String(), URL: base,
		Secret: benchSecret, Rate: o.rate, Duration: o.duration, Pool: pool, Progress: progress})
	stopSampling()
	<-done
	r.Mode, r.Samples = "growth", samples
	return r, err
}

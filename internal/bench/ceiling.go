package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The machine's limit for the thing a webhook needs: one durable single-row insert
// per commit, from many clients, without and with a per-row pg_notify trigger (which
// takes a database-wide lock at commit). Every other figure is read against these.
const ceilingSchema = `
DROP TABLE IF EXISTS bench_ceiling, bench_ceiling_notify;
CREATE TABLE bench_ceiling (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE bench_ceiling_notify (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload jsonb NOT NULL);
CREATE OR REPLACE FUNCTION bench_ceiling_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_ceiling', json_build_object('id', NEW.id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_ceiling_notify AFTER INSERT ON bench_ceiling_notify FOR EACH ROW EXECUTE FUNCTION bench_ceiling_notify();`

// Ceiling measures single-row insert commits per second with clients connections
// for d each, plain and with the NOTIFY trigger.
func Ceiling(ctx context.Context, pool *pgxpool.Pool, clients int, d time.Duration) (Result, error) {
	if _, err := pool.Exec(ctx, ceilingSchema); err != nil {
		return Result{}, fmt.Errorf("ceiling tables: %w", err)
	}
	defer pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_ceiling, bench_ceiling_notify")
	plain, err := commitsPerSecond(ctx, pool, "bench_ceiling", clients, d)
	if err != nil {
		return Result{}, err
	}
	notify, err := commitsPerSecond(ctx, pool, "bench_ceiling_notify", clients, d)
	if err != nil {
		return Result{}, err
	}
	return Result{System: "postgres", Mode: "ceiling", Clients: clients, CommitsPerSec: plain, NotifyCommitsPerS: notify}, nil
}

func commitsPerSecond(ctx context.Context, pool *pgxpool.Pool, table string, clients int, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var commits atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	sql := "INSERT INTO " + table + ` (payload) VALUES ('{"type":"message.received","data":{"text":"hello"}}')`
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := pool.Exec(ctx, sql); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				commits.Add(1)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return 0, fmt.Errorf("insert into %s: %w", table, firstErr)
	}
	return float64(commits.Load()) / time.Since(start).Seconds(), nil
}

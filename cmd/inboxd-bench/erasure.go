package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/bench"
)

// benchErasure shows what an erasure costs the live traffic: on a table holding
// --rows processed events of other contacts and --contact-messages of one contact,
// the same open-loop rate step runs twice, first alone, then with an erasure of that
// contact requested as the measured window starts; it reports both steps' latencies
// and how fast the erasure removed rows (messages plus emptied events).
func benchErasure(ctx context.Context, pool *pgxpool.Pool, dbURL string, o benchOptions, progress io.Writer) ([]bench.Result, error) {
	if err := bench.Reset(ctx, pool); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "storing %d events of other contacts and %d messages of the one to erase...\n", o.rows, o.contactMessages)
	if err := bench.FillHistory(ctx, pool, o.rows, time.Hour); err != nil {
		return nil, err
	}
	if err := bench.FillContact(ctx, pool, o.contactMessages); err != nil {
		return nil, err
	}
	const token = "bench-admin-token"
	var results []bench.Result
	for _, erase := range []bool{false, true} {
		label := fmt.Sprintf("inboxd, %d rows, no erasure", o.rows)
		if erase {
			label = fmt.Sprintf("inboxd, %d rows, erasing %d messages", o.rows, o.contactMessages)
		}
		srv, err := o.start(ctx, target{name: label, env: []string{"INBOX_RETENTION=0", "INBOX_ADMIN_TOKENS=" + token}}, dbURL)
		if err != nil {
			return results, err
		}
		var requested chan error
		if erase {
			requested = make(chan error, 1)
			time.AfterFunc(o.warmup, func() { requested <- requestErasure(srv.base, token) })
		}
		r, err := bench.RunRate(ctx, bench.RateConfig{System: label, URL: srv.base, Secret: benchSecret, Rate: o.rate,
			Duration: o.duration, Warmup: o.warmup, Pool: pool, Progress: progress})
		if err == nil && erase {
			if err = <-requested; err == nil {
				r.Deleted, r.DeletedPerSec, err = erasureRate(ctx, pool)
			}
		}
		srv.stop()
		if err != nil {
			return results, err
		}
		fmt.Fprintf(progress, "%s: ack p99 %v, e2e p99 %v, erased %d rows (%.0f/s)\n", label, r.Ack.P99, r.EndToEnd.P99, r.Deleted, r.DeletedPerSec)
		results = append(results, r)
	}
	return results, nil
}

func requestErasure(base, token string) error {
	req, _ := http.NewRequest("POST", base+"/v1/erasures", strings.NewReader(`{"contact":"`+bench.EraseContact+`"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("request the erasure: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("request the erasure: %s", resp.Status)
	}
	return nil
}

// erasureRate waits for the erasure to finish and returns the rows it removed and
// their rate over its whole run.
func erasureRate(ctx context.Context, pool *pgxpool.Pool) (int64, float64, error) {
	for {
		var done bool
		var rows int64
		var took float64
		err := pool.QueryRow(ctx, `
SELECT state = 'done', (counts->>'messages')::bigint + (counts->>'events')::bigint,
       EXTRACT(epoch FROM COALESCE(finished_at, now()) - requested_at)
FROM erasures ORDER BY id DESC LIMIT 1`).Scan(&done, &rows, &took)
		if err != nil {
			return 0, 0, fmt.Errorf("read the erasure: %w", err)
		}
		if done {
			return rows, float64(rows) / took, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

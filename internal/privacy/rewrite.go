package privacy

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/provider"
	"inboxd/internal/redact"
)

// RewriteProgress is where a rewrite stands.
type RewriteProgress struct {
	LastID    int64 // the last event looked at: --after resumes past it
	Scanned   int64
	Rewritten int64
}

// Rewrite applies policy to the stored payloads of events received before before,
// with ids above after, in batches of batch (one short transaction each, id order), and
// calls progress after each. It is idempotent (a policy applied twice changes nothing
// more, redact.Policy.Apply) and resumable: run it again, or pass the last
// RewriteProgress.LastID as after. Tombstones are skipped. Payloads only: messages
// keep the values they were normalized from (erasure removes those).
func Rewrite(ctx context.Context, pool *pgxpool.Pool, policy *redact.Policy, before time.Time, after int64, batch int, progress func(RewriteProgress)) (RewriteProgress, error) {
	p := RewriteProgress{LastID: after}
	for {
		n, err := rewriteBatch(ctx, pool, policy, before, batch, &p)
		if err != nil {
			return p, fmt.Errorf("rewrite payloads after event %d: %w", p.LastID, err)
		}
		if progress != nil {
			progress(p)
		}
		if n < batch {
			return p, nil
		}
	}
}

func rewriteBatch(ctx context.Context, pool *pgxpool.Pool, policy *redact.Policy, before time.Time, batch int, p *RewriteProgress) (int, error) {
	rows, _ := pool.Query(ctx, `
SELECT id, provider, payload FROM inbound_events
WHERE id > $1 AND received_at < $2 AND erased_at IS NULL
ORDER BY id LIMIT $3`, p.LastID, before, batch)
	type stored struct {
		ID       int64
		Provider string
		Payload  json.RawMessage
	}
	events, err := pgx.CollectRows(rows, pgx.RowToStructByPos[stored])
	if err != nil {
		return 0, err
	}
	var ids []int64
	var payloads []string
	for _, e := range events {
		if out, changed := policy.Apply(provider.Base(e.Provider), e.Payload); len(changed) > 0 {
			ids, payloads = append(ids, e.ID), append(payloads, string(out))
		}
	}
	if len(ids) > 0 {
		tag, err := pool.Exec(ctx, `
UPDATE inbound_events e SET payload = r.payload::jsonb
FROM unnest($1::bigint[], $2::text[]) AS r(id, payload)
WHERE e.id = r.id AND e.erased_at IS NULL`, ids, payloads)
		if err != nil {
			return 0, err
		}
		p.Rewritten += tag.RowsAffected()
	}
	p.Scanned += int64(len(events))
	if len(events) > 0 {
		p.LastID = events[len(events)-1].ID
	}
	return len(events), nil
}

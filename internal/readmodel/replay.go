package readmodel

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
)

// ReplayableStates are the states an operator may replay (processor.ReplayableStates).
var ReplayableStates = processor.ReplayableStates

// MaxReplay is the most events one bulk replay requeues.
const MaxReplay = 10000

// ReplayFilter selects finished events to replay in bulk, oldest first.
type ReplayFilter struct {
	State    string // one of ReplayableStates
	Provider string // empty: all
	Limit    int    // 1 to MaxReplay
}

// Validate checks a replay filter; the API and the CLI call it before anything else.
func (f ReplayFilter) Validate() error {
	if f.State == "" {
		return fmt.Errorf("%w: state is required: %s (the events a bulk replay requeues)", ErrBadFilter, strings.Join(ReplayableStates, " or "))
	}
	if !slices.Contains(ReplayableStates, f.State) {
		return fmt.Errorf("%w: only %s events can be replayed, got %q", ErrBadFilter, strings.Join(ReplayableStates, " or "), quoted(f.State))
	}
	if f.Limit < 1 || f.Limit > MaxReplay {
		return fmt.Errorf("%w: limit must be from 1 to %d, got %d", ErrBadFilter, MaxReplay, f.Limit)
	}
	return CheckProvider(f.Provider)
}

// Replay requeues the events with these ids that are finished (the others are left
// alone) and returns how many it requeued.
func Replay(ctx context.Context, pool *pgxpool.Pool, ids []int64) (int64, error) {
	return processor.Requeue(ctx, pool, ids)
}

// Replayed says what a replay by id did with the ids it was given.
type Replayed struct {
	Requeued  int64            // events requeued
	LeftAlone map[int64]string // ids not requeued, each with why: "pending", "processing" or "erased"
	Missing   []int64          // ids of no event, ascending
}

// ReplayEach requeues the events with these ids that are finished, as Replay does,
// and says why each other id was not: an event still pending or processing is on its
// way already, an erased one has nothing left to apply, and an id of no event is
// most often a typo. The states are read just before the requeue, so an event that
// finishes in between is named as it was.
func ReplayEach(ctx context.Context, pool *pgxpool.Pool, ids []int64) (Replayed, error) {
	out := Replayed{LeftAlone: map[int64]string{}}
	rows, err := pool.Query(ctx, `SELECT id, state, erased_at IS NOT NULL FROM inbound_events WHERE id = ANY($1::bigint[])`, ids)
	if err != nil {
		return out, fmt.Errorf("read the states of %d events: %w", len(ids), err)
	}
	found := map[int64]bool{}
	var (
		id     int64
		state  string
		erased bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &state, &erased}, func() error {
		found[id] = true
		switch {
		case erased:
			out.LeftAlone[id] = "erased"
		case !slices.Contains(ReplayableStates, state):
			out.LeftAlone[id] = state
		}
		return nil
	}); err != nil {
		return out, fmt.Errorf("read the states of %d events: %w", len(ids), err)
	}
	for _, id := range ids {
		if !found[id] {
			out.Missing = append(out.Missing, id)
			found[id] = true // named once, however often given
		}
	}
	slices.Sort(out.Missing)
	out.Requeued, err = processor.Requeue(ctx, pool, ids)
	return out, err
}

// ReplayMatching requeues the events f selects and returns how many.
func ReplayMatching(ctx context.Context, pool *pgxpool.Pool, f ReplayFilter) (int64, error) {
	if err := f.Validate(); err != nil {
		return 0, err
	}
	return processor.RequeueState(ctx, pool, f.State, f.Provider, f.Limit)
}

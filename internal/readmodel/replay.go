package readmodel

import (
	"context"
	"fmt"
	"slices"
	"strings"

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

// ReplayMatching requeues the events f selects and returns how many.
func ReplayMatching(ctx context.Context, pool *pgxpool.Pool, f ReplayFilter) (int64, error) {
	if err := f.Validate(); err != nil {
		return 0, err
	}
	return processor.RequeueState(ctx, pool, f.State, f.Provider, f.Limit)
}

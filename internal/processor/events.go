package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Event is an inbound event as operators see it (the admin API and `inboxd events`);
// Headers and Payload only from FindEvent.
type Event struct {
	ID          int64           `json:"id" db:"id"`
	Provider    string          `json:"provider" db:"provider"`
	ExternalID  string          `json:"external_id" db:"external_id"`
	State       string          `json:"state" db:"state"`
	Attempts    int             `json:"attempts" db:"attempts"`
	RunAt       time.Time       `json:"run_at" db:"run_at"`
	LockedUntil *time.Time      `json:"locked_until" db:"locked_until"`
	LastError   *string         `json:"last_error" db:"last_error"`
	ReceivedAt  time.Time       `json:"received_at" db:"received_at"`
	ProcessedAt *time.Time      `json:"processed_at" db:"processed_at"`
	RequestID   *string         `json:"request_id" db:"request_id"`
	Headers     json.RawMessage `json:"headers,omitempty" db:"headers"`
	Payload     json.RawMessage `json:"payload,omitempty" db:"payload"`
}

const eventColumns = `id, provider, external_id, state, attempts, run_at, locked_until, last_error, received_at, processed_at, request_id`

// States are the states of inbound_events.state.
var States = []string{"pending", "processing", "processed", "dead"}

// EventFilter selects events for ListEvents: newest first, before an id (0: from the
// newest), at most Limit.
type EventFilter struct {
	State    string // one of States, or empty
	Provider string
	Before   int64
	Limit    int
}

// ErrBadFilter wraps every reason Validate refuses a filter.
var ErrBadFilter = errors.New("bad filter")

// Validate checks a filter as every caller must: a known state, and a provider that
// Postgres' text can compare (at most 256 bytes of UTF-8 without NUL).
func (f EventFilter) Validate() error {
	if f.State != "" && !isState(f.State) {
		return fmt.Errorf("%w: state must be pending, processing, processed or dead, got %q", ErrBadFilter, f.State)
	}
	if len(f.Provider) > 256 || !utf8.ValidString(f.Provider) || strings.ContainsRune(f.Provider, 0) {
		return fmt.Errorf("%w: provider must be at most 256 bytes of UTF-8 text without NUL", ErrBadFilter)
	}
	if f.Limit < 1 {
		return fmt.Errorf("%w: limit must be at least 1, got %d", ErrBadFilter, f.Limit)
	}
	return nil
}

func isState(s string) bool {
	for _, st := range States {
		if s == st {
			return true
		}
	}
	return false
}

// eventsQuery builds the list query for f. Only the filters given become conditions,
// so that each shape gets its own plan, and the state (one of four values, checked)
// is written into the SQL rather than passed: a generic plan for "state = $n" could
// not use the partial index of dead events, and pgx's statement cache makes generic
// plans likely.
func eventsQuery(f EventFilter) (string, []any) {
	where := []string{}
	args := []any{f.Limit}
	if f.State != "" {
		where = append(where, "state = '"+f.State+"'")
	}
	if f.Provider != "" {
		args = append(args, f.Provider)
		where = append(where, fmt.Sprintf("provider = $%d", len(args)))
	}
	if f.Before > 0 {
		args = append(args, f.Before)
		where = append(where, fmt.Sprintf("id < $%d", len(args)))
	}
	sql := "SELECT " + eventColumns + " FROM inbound_events"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	return sql + " ORDER BY id DESC LIMIT $1", args
}

// ListEvents lists the events f selects, newest first, without payloads.
func ListEvents(ctx context.Context, pool *pgxpool.Pool, f EventFilter) ([]Event, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	sql, args := eventsQuery(f)
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	events, err := pgx.CollectRows(rows, pgx.RowToStructByNameLax[Event])
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return events, nil
}

// ErrNoEvent: no event has that id.
var ErrNoEvent = errors.New("no such event")

// FindEvent returns one event with its payload and kept headers.
func FindEvent(ctx context.Context, pool *pgxpool.Pool, id int64) (Event, error) {
	rows, _ := pool.Query(ctx, "SELECT "+eventColumns+", headers, payload FROM inbound_events WHERE id = $1", id)
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByNameLax[Event])
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, fmt.Errorf("event %d: %w", id, ErrNoEvent)
	}
	if err != nil {
		return Event{}, fmt.Errorf("get event %d: %w", id, err)
	}
	return e, nil
}

// Arrival is an event as `inboxd tail` shows it: what it is (Type) read from its
// payload, without the payload.
type Arrival struct {
	ID         int64     `json:"id"`
	Provider   string    `json:"provider"`
	ExternalID string    `json:"external_id"`
	Type       string    `json:"type"`
	ReceivedAt time.Time `json:"received_at"`
}

// arrivalColumns reads an event's type from its payload: the Standard Webhooks type;
// "message" or "status <status>" for Twilio; "message <type>" or "status <status>"
// for Meta.
const arrivalColumns = `id, provider, external_id,
    COALESCE(CASE provider
        WHEN 'generic' THEN payload->>'type'
        WHEN 'twilio' THEN CASE WHEN payload ? 'MessageStatus' THEN 'status ' || (payload->>'MessageStatus') ELSE 'message' END
        WHEN 'meta' THEN CASE WHEN payload ? 'status' THEN 'status ' || (payload->'status'->>'status')
                              ELSE 'message ' || COALESCE(payload->'message'->>'type', '?') END
    END, '?'),
    received_at`

// Arrivals returns the events with the given ids, in id order.
func Arrivals(ctx context.Context, pool *pgxpool.Pool, ids []int64) ([]Arrival, error) {
	rows, err := pool.Query(ctx, "SELECT "+arrivalColumns+" FROM inbound_events WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Arrival])
}

// ArrivalsAfter returns up to limit events with ids above after, in id order (what
// arrived while a listener was away).
func ArrivalsAfter(ctx context.Context, pool *pgxpool.Pool, after int64, limit int) ([]Arrival, error) {
	rows, err := pool.Query(ctx, "SELECT "+arrivalColumns+" FROM inbound_events WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[Arrival])
}

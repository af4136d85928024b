// Package readmodel is what operators and consumers read: events with their states,
// the queue's statistics, replay, and conversations with their messages. The API, the
// CLI and the console import it; it reads the tables that ingest and the processor
// write, and changes nothing itself: a replay goes through the processor's Requeue,
// the one place that changes an event's state.
package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/provider/registry"
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
	ErasedAt    *time.Time      `json:"erased_at" db:"erased_at"` // the payload was erased (a tombstone)
	Headers     json.RawMessage `json:"headers,omitempty" db:"headers"`
	// Errors are the failed attempts' errors, oldest first (the last 20).
	Errors  []AttemptError  `json:"errors,omitempty" db:"errors"`
	Payload json.RawMessage `json:"payload,omitempty" db:"payload"`
}

// AttemptError is one failed attempt.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

const eventColumns = `id, provider, external_id, state, attempts, run_at, locked_until, last_error, received_at, processed_at, request_id, erased_at`

// list runs a list query and collects its rows with to; what names the query in an
// error.
func list[T any](ctx context.Context, pool *pgxpool.Pool, what string, to pgx.RowToFunc[T], sql string, args ...any) ([]T, error) {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, to)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// FindEvent returns one event with its payload and kept headers.
func FindEvent(ctx context.Context, pool *pgxpool.Pool, id int64) (Event, error) {
	rows, _ := pool.Query(ctx, "SELECT "+eventColumns+", headers, payload, errors FROM inbound_events WHERE id = $1", id)
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByNameLax[Event])
	if errors.Is(err, pgx.ErrNoRows) {
		return Event{}, fmt.Errorf("event %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("get event %d: %w", id, err)
	}
	return e, nil
}

// Arrival is an event as `inboxd tail` shows it: what it is (Type, in the
// provider's words, from its Describe) without the payload.
type Arrival struct {
	ID         int64     `json:"id"`
	Provider   string    `json:"provider"`
	ExternalID string    `json:"external_id"`
	Type       string    `json:"type"`
	ReceivedAt time.Time `json:"received_at"`
}

const arrivalColumns = `id, provider, external_id, payload, received_at`

// Arrivals returns the events with the given ids, in id order.
func Arrivals(ctx context.Context, pool *pgxpool.Pool, ids []int64) ([]Arrival, error) {
	return arrivals(ctx, pool, "SELECT "+arrivalColumns+" FROM inbound_events WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
}

// ArrivalsAfter returns up to limit events with ids above after, in id order (what
// arrived while a listener was away).
func ArrivalsAfter(ctx context.Context, pool *pgxpool.Pool, after int64, limit int) ([]Arrival, error) {
	return arrivals(ctx, pool, "SELECT "+arrivalColumns+" FROM inbound_events WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
}

func arrivals(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) ([]Arrival, error) {
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	var out []Arrival
	var a Arrival
	var payload []byte
	_, err = pgx.ForEachRow(rows, []any{&a.ID, &a.Provider, &a.ExternalID, &payload, &a.ReceivedAt}, func() error {
		a.Type = describe(a.Provider, payload)
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	return out, nil
}

// describe asks the event's provider what it is.
func describe(name string, payload []byte) string {
	p, err := registry.Lookup(name)
	if err != nil || p.Describe == nil {
		return "?"
	}
	return p.Describe(payload)
}

// EventDetail is one event in full (`inboxd events show`): the event with its
// payload and kept headers, and the message it is about.
type EventDetail struct {
	Event
	// Message is the message the event created or (a status) is about, once stored.
	Message *Message `json:"message"`
	// ParkedStatus is the status the event carries while its message has not arrived.
	ParkedStatus *string `json:"parked_status"`
	// Meaning is what the event's provider reads in its payload now, or why it
	// cannot (the reason it went dead).
	Meaning string `json:"meaning"`
}

// ShowEvent returns one event in full. The message is found the way processing
// finds it, by the provider's message id read from the payload (the unique key of
// messages), so no index on the event id is needed.
func ShowEvent(ctx context.Context, pool *pgxpool.Pool, id int64) (EventDetail, error) {
	e, err := FindEvent(ctx, pool, id)
	if err != nil {
		return EventDetail{}, err
	}
	d := EventDetail{Event: e}
	messageID := ""
	if e.ErasedAt != nil {
		d.Meaning = "erased (a tombstone: its payload was erased on request)"
		return d, nil
	}
	if p, err := registry.Lookup(e.Provider); err != nil {
		d.Meaning = err.Error()
	} else if n, err := p.Normalize(e.Payload, e.ReceivedAt); err != nil {
		d.Meaning = err.Error()
	} else if n.Message != nil {
		messageID, d.Meaning = n.Message.ID, n.Message.Direction+" "+n.Message.Type+" message"
	} else {
		messageID, d.Meaning = n.Status.MessageID, "status "+n.Status.Status
	}
	if messageID == "" {
		return d, nil
	}
	rows, _ := pool.Query(ctx, MessageColumns+" FROM messages WHERE provider = $1 AND provider_message_id = $2", e.Provider, messageID)
	msgs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Message])
	if err != nil {
		return EventDetail{}, fmt.Errorf("event %d's message: %w", id, err)
	}
	if len(msgs) == 1 {
		d.Message = &msgs[0]
		d.Message.MarkRedacted()
	}
	err = pool.QueryRow(ctx, `SELECT status FROM pending_statuses
WHERE provider = $1 AND provider_message_id = $2 AND inbound_event_id = $3`, e.Provider, messageID, id).Scan(&d.ParkedStatus)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return EventDetail{}, fmt.Errorf("event %d's parked status: %w", id, err)
	}
	return d, nil
}

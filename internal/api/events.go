package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/processor"
)

// Event is an inbound event as operators see it; Payload and Headers only on
// GET /v1/events/{id}.
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

var states = map[string]bool{"pending": true, "processing": true, "processed": true, "dead": true}

// listEvents: newest first, keyset on id; ?state= and ?provider= filter.
func listEvents(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := queryEvents(r.Context(), pool, r)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		jsonhttp.Write(w, http.StatusOK, p)
	}
}

// eventsQuery builds the list query for the request's filters. Only the filters given
// become conditions, so that each shape gets its own plan, and the state (one of four
// values, checked) is written into the SQL rather than passed: a generic plan for
// "state = $n" could not use the partial index of dead events, and pgx's statement
// cache makes generic plans likely.
func eventsQuery(r *http.Request) (sql string, args []any, limit int, err error) {
	if limit, err = limitParam(r); err != nil {
		return "", nil, 0, err
	}
	after, hasCursor, err := cursorParam(r)
	if err != nil {
		return "", nil, 0, err
	}
	state := r.URL.Query().Get("state")
	if state != "" && !states[state] {
		return "", nil, 0, badParam("state must be pending, processing, processed or dead, got %q", state)
	}
	provider, err := textParam(r, "provider")
	if err != nil {
		return "", nil, 0, err
	}
	where := []string{}
	args = []any{limit + 1}
	if state != "" {
		where = append(where, "state = '"+state+"'")
	}
	if provider != "" {
		args = append(args, provider)
		where = append(where, fmt.Sprintf("provider = $%d", len(args)))
	}
	if hasCursor {
		args = append(args, after.ID)
		where = append(where, fmt.Sprintf("id < $%d", len(args)))
	}
	sql = "SELECT " + eventColumns + " FROM inbound_events"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	return sql + " ORDER BY id DESC LIMIT $1", args, limit, nil
}

func queryEvents(ctx context.Context, pool *pgxpool.Pool, r *http.Request) (page[Event], error) {
	sql, args, limit, err := eventsQuery(r)
	if err != nil {
		return page[Event]{}, err
	}
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return page[Event]{}, fmt.Errorf("list events: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByNameLax[Event])
	if err != nil {
		return page[Event]{}, fmt.Errorf("list events: %w", err)
	}
	return paginate(list, limit, func(e Event) cursor { return cursor{ID: e.ID} }), nil
}

func getEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := idParam(r)
		if err == nil {
			var e Event
			if e, err = findEvent(r.Context(), pool, id); err == nil {
				jsonhttp.Write(w, http.StatusOK, e)
				return
			}
		}
		respondErr(log, w, r, err)
	}
}

func findEvent(ctx context.Context, pool *pgxpool.Pool, id int64) (Event, error) {
	rows, _ := pool.Query(ctx, "SELECT "+eventColumns+", headers, payload FROM inbound_events WHERE id = $1", id)
	e, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByNameLax[Event])
	if err == pgx.ErrNoRows {
		return Event{}, fmt.Errorf("event %d: %w", id, errNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("get event %d: %w", id, err)
	}
	return e, nil
}

func replayEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := idParam(r)
		if err == nil {
			_, err = processor.Requeue(r.Context(), pool, []int64{id})
		}
		var e Event
		if err == nil {
			e, err = findEvent(r.Context(), pool, id)
		}
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		e.Payload, e.Headers = nil, nil
		jsonhttp.Write(w, http.StatusOK, e)
	}
}

// replayEvents requeues up to ?limit= (default 1000, at most 10000) events in
// ?state= (dead or processed), optionally of one ?provider=, oldest first.
func replayEvents(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		state := q.Get("state")
		limit, err := strconv.Atoi(q.Get("limit"))
		if q.Get("limit") == "" {
			limit, err = 1000, nil
		}
		switch {
		case state != "dead" && state != "processed":
			err = badParam("state must be dead or processed, got %q", state)
		case err != nil || limit < 1 || limit > 10000:
			err = badParam("limit must be a whole number from 1 to 10000, got %q", q.Get("limit"))
		}
		var provider string
		if err == nil {
			provider, err = textParam(r, "provider")
		}
		var n int64
		if err == nil {
			n, err = processor.RequeueState(r.Context(), pool, state, provider, limit)
		}
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		jsonhttp.Write(w, http.StatusOK, map[string]int64{"replayed": n})
	}
}

func stats(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := processor.ReadStats(r.Context(), pool)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		jsonhttp.Write(w, http.StatusOK, s)
	}
}

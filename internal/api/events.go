package api

import (
	"context"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/processor"
)

// Event is an inbound event as operators see it; Payload and Headers only on
// GET /v1/events/{id}.
type Event = processor.Event

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

func queryEvents(ctx context.Context, pool *pgxpool.Pool, r *http.Request) (page[Event], error) {
	limit, err := limitParam(r)
	if err != nil {
		return page[Event]{}, err
	}
	after, _, err := cursorParam(r)
	if err != nil {
		return page[Event]{}, err
	}
	q := r.URL.Query()
	list, err := processor.ListEvents(ctx, pool, processor.EventFilter{
		State: q.Get("state"), Provider: q.Get("provider"), Before: after.ID, Limit: limit + 1,
	})
	if err != nil {
		return page[Event]{}, err
	}
	return paginate(list, limit, func(e Event) cursor { return cursor{ID: e.ID} }), nil
}

func getEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := idParam(r)
		if err == nil {
			var e Event
			if e, err = processor.FindEvent(r.Context(), pool, id); err == nil {
				jsonhttp.Write(w, http.StatusOK, e)
				return
			}
		}
		respondErr(log, w, r, err)
	}
}

func replayEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := idParam(r)
		if err == nil {
			_, err = processor.Requeue(r.Context(), pool, []int64{id})
		}
		var e Event
		if err == nil {
			e, err = processor.FindEvent(r.Context(), pool, id)
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

package api

import (
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/readmodel"
)

// listEvents: newest first, keyset on id; ?state= and ?provider= filter.
func listEvents(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		limit, err := limitParam(r)
		if err != nil {
			return nil, err
		}
		after, err := cursorParam(r, "events")
		if err != nil {
			return nil, err
		}
		q := r.URL.Query()
		f := readmodel.EventFilter{State: q.Get("state"), Provider: q.Get("provider"), ExternalID: q.Get("external_id"), Limit: limit + 1}
		if after != nil {
			f.Before = after.ID
		}
		list, err := readmodel.ListEvents(r.Context(), pool, f)
		if err != nil {
			return nil, err
		}
		return paginate(list, limit, "events", func(e readmodel.Event) readmodel.Key { return readmodel.Key{ID: e.ID} }), nil
	})
}

func getEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		id, err := idParam(r)
		if err != nil {
			return nil, err
		}
		return readmodel.FindEvent(r.Context(), pool, id)
	})
}

// replayEvent requeues one event (if it is finished) and answers it as it is now.
func replayEvent(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		id, err := idParam(r)
		if err != nil {
			return nil, err
		}
		if _, err := readmodel.Replay(r.Context(), pool, []int64{id}); err != nil {
			return nil, err
		}
		e, err := readmodel.FindEvent(r.Context(), pool, id)
		e.Payload, e.Headers = nil, nil
		return e, err
	})
}

// replayEvents requeues up to ?limit= (default 1000) events in ?state= (dead or
// processed), optionally of one ?provider=, oldest first.
func replayEvents(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		q := r.URL.Query()
		f := readmodel.ReplayFilter{State: q.Get("state"), Provider: q.Get("provider"), Limit: 1000}
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil {
				return nil, badParam("limit must be a whole number from 1 to %d, got %q", readmodel.MaxReplay, clip(s))
			}
			f.Limit = n
		}
		n, err := readmodel.ReplayMatching(r.Context(), pool, f)
		if err != nil {
			return nil, err
		}
		return map[string]int64{"replayed": n}, nil
	})
}

func stats(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) { return readmodel.ReadStats(r.Context(), pool) })
}

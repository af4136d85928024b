package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/feed"
)

// maxWait is the longest ?wait= a long poll may ask for.
const maxWait = 60 * time.Second

// heartbeat is how often an idle stream sends a comment line, so that proxies and
// clients see the connection alive.
const heartbeat = 15 * time.Second

// changesPage is GET /v1/changes' answer: next_cursor is always set (the cursor to
// pass next time, the same one when nothing came).
type changesPage struct {
	Data       []feed.Change `json:"data"`
	NextCursor string        `json:"next_cursor"`
}

// listChanges: GET /v1/changes?after=&limit=&wait=. The feed is read from the
// primary: a replica's snapshot watermark is its own. Without after, from the
// horizon (feed.Start), which is also the next_cursor of an empty page.
func listChanges(pool *pgxpool.Pool, hub *feed.Hub, log *zap.Logger) http.HandlerFunc {
	page := respond(log, func(r *http.Request) (any, error) {
		given := r.URL.Query().Get("after")
		after, err := feed.ParseCursor(given)
		if err != nil {
			return nil, badParam("after must be a change id or a next_cursor this API returned, got %q; start again without it", clip(given))
		}
		limit, err := limitParam(r)
		if err != nil {
			return nil, err
		}
		var wait time.Duration
		if s := r.URL.Query().Get("wait"); s != "" {
			if wait, err = time.ParseDuration(s); err != nil || wait < 0 || wait > maxWait {
				return nil, badParam("wait must be a duration from 0s to 60s, such as 30s, got %q", clip(s))
			}
		}
		if r.Method == http.MethodHead {
			wait = 0 // a HEAD asks for the headers, not for a change to come
		}
		if after, err = feed.Start(r.Context(), pool, after, given != ""); err != nil {
			return nil, err
		}
		changes, err := feed.Wait(r.Context(), pool, hub, after, limit, wait)
		if err != nil {
			return nil, err
		}
		next := after
		if len(changes) > 0 {
			next = changes[len(changes)-1].Cursor()
		}
		if changes == nil {
			changes = []feed.Change{}
		}
		return changesPage{Data: changes, NextCursor: next.String()}, nil
	})
	return func(w http.ResponseWriter, r *http.Request) {
		// A long poll may outlast the server's write timeout, which is sized for webhooks.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(maxWait + 10*time.Second))
		page(w, r)
	}
}

// streamChanges: GET /v1/changes/stream, the feed as server-sent events (id, event,
// data), resuming after Last-Event-ID (or ?after=), with a heartbeat comment when
// idle. It runs until the client leaves or the service stops.
func streamChanges(pool *pgxpool.Pool, hub *feed.Hub, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		from, source := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
		if from == "" {
			from, source = r.URL.Query().Get("after"), "after"
		}
		cursor, err := feed.ParseCursor(from)
		if err != nil {
			respondErr(log, w, r, badParam("%s = %q: %v; start again without it", source, clip(from), err))
			return
		}
		if cursor, err = feed.Start(r.Context(), pool, cursor, from != ""); err != nil {
			respondErr(log, w, r, err)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, ": inboxd change feed\n\n")
		if err := rc.Flush(); err != nil || r.Method == http.MethodHead {
			return // a HEAD has its headers: a stream of nothing would never end
		}
		for r.Context().Err() == nil {
			changes, err := feed.Wait(r.Context(), pool, hub, cursor, 200, heartbeat)
			if err != nil {
				if !errors.Is(err, r.Context().Err()) {
					log.Warn("change stream ended", zap.String("request_id", reqID(r)), zap.Error(err))
				}
				return
			}
			if len(changes) == 0 {
				fmt.Fprint(w, ": heartbeat\n\n")
			}
			for _, c := range changes {
				b, _ := json.Marshal(c)
				fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", c.ID, c.Type, b)
				cursor = c.Cursor()
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

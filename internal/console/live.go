package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/readmodel"
)

// The live page: the newest arrivals, server-rendered (it reads without
// JavaScript), then followed by live.js through server-sent events from
// /console/live/stream. The stream reads arrivals after the last one it sent, when
// Changes says the processor committed (a process's LISTEN connection hears every
// process's commits) and at least every liveRecheck: an event appears within about
// a second of its arrival. It is a view: an event whose id was handed out before a
// later one's but committed after it is shown on the next page load, not in the
// stream (the change feed, internal/feed, is the ordered, complete record).

// liveRecheck bounds how long an arrival waits to be shown (console.liveRecheck).
const liveRecheck = time.Second

// liveHeartbeat keeps an idle stream open through proxies (console.liveHeartbeat).
const liveHeartbeat = 15 * time.Second

// livePage is how many arrivals the stream reads at a time; after a full page it
// reads on at once.
const livePage = 200

type liveData struct {
	Events []readmodel.Event
	After  int64
}

func (c *console) live(w http.ResponseWriter, r *http.Request) {
	evs, err := readmodel.ListEvents(r.Context(), c.cfg.Pool, readmodel.EventFilter{Limit: 50})
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	d := liveData{Events: evs}
	if len(evs) > 0 {
		d.After = evs[0].ID
	}
	c.render(w, r, http.StatusOK, "live", view{Title: "Live", Nav: "live", Data: d, Script: "/console/static/live.js"})
}

// liveStream: GET /console/live/stream?after=ID, each arrival as an event
// "arrival" with its JSON (id, provider, external id, type, received_at).
func (c *console) liveStream(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if id, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err == nil && id > after {
		after = id
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{}) // a stream outlives the server's write timeout
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": inboxd arrivals\n\n")
	if rc.Flush() != nil || r.Method == http.MethodHead {
		return // a HEAD has its headers: a stream of nothing would never end
	}
	idle := time.Now()
	for {
		var next <-chan struct{}
		if c.cfg.Changes != nil {
			next = c.cfg.Changes()
		}
		arrivals, err := readmodel.ArrivalsAfter(r.Context(), c.cfg.Pool, after, livePage)
		if err != nil {
			if r.Context().Err() == nil {
				c.cfg.Log.Warn("console live stream ended", zap.Error(err))
			}
			return
		}
		for _, a := range arrivals {
			b, _ := json.Marshal(a)
			fmt.Fprintf(w, "id: %d\nevent: arrival\ndata: %s\n\n", a.ID, b)
			after = a.ID
		}
		if len(arrivals) > 0 {
			idle = time.Now()
		} else if time.Since(idle) > c.liveHeartbeat {
			fmt.Fprint(w, ": heartbeat\n\n")
			idle = time.Now()
		}
		if rc.Flush() != nil {
			return
		}
		if len(arrivals) == livePage {
			continue // more may be there already: a burst is not shown a page a wake-up
		}
		select {
		case <-r.Context().Done():
			return
		case <-next:
		case <-time.After(c.liveRecheck):
		}
	}
}

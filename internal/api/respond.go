package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
	"inboxd/internal/jsonhttp"
	"inboxd/internal/privacy"
	"inboxd/internal/readmodel"
	"inboxd/internal/store"
)

// errBadParam wraps every invalid query or path parameter.
var errBadParam = errors.New("bad parameter")

// page is the shape of every list response.
type page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// reason is a refused request's message, in one form whichever package refused it:
// "bad parameter: " and what was wrong. The packages' own words for it ("bad
// request: ", "bad filter: ") are replaced, so that every 400 reads alike.
func reason(err error) string {
	msg := err.Error()
	for _, sentinel := range []error{errBadParam, readmodel.ErrBadFilter, privacy.ErrBadRequest, delivery.ErrBadRequest} {
		if errors.Is(err, sentinel) {
			msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
		}
	}
	return errBadParam.Error() + ": " + msg
}

// respondErr maps an error to its status and the JSON error shape; unexpected errors
// are logged once, here, with the request id.
func respondErr(log *zap.Logger, w http.ResponseWriter, r *http.Request, err error) {
	if status, code, msg, ok := privacyErr(err); ok {
		jsonhttp.Error(w, status, code, msg)
		return
	}
	switch {
	case errors.Is(err, feed.ErrCursorExpired):
		jsonhttp.Error(w, http.StatusGone, "cursor_expired", err.Error())
	case errors.Is(err, readmodel.ErrNotFound):
		jsonhttp.Error(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, errBadParam), errors.Is(err, readmodel.ErrBadFilter):
		jsonhttp.Error(w, http.StatusBadRequest, "bad_parameter", reason(err))
	case store.Unstorable(err):
		// A parameter Postgres cannot hold reached a query: textParam should have
		// caught it, and it is still the request's fault, not an outage.
		jsonhttp.Error(w, http.StatusBadRequest, "bad_parameter", "a parameter holds a value the database cannot compare: "+err.Error())
	default:
		log.Error("api request", zap.String("route", route(r)), zap.String("request_id", reqID(r)), zap.Error(err))
		w.Header().Set("Retry-After", "1")
		jsonhttp.Error(w, http.StatusServiceUnavailable, "unavailable", "the database could not answer; retry later")
	}
}

// textParam reads a free-text query parameter (a provider, a contact address):
// at most 256 bytes of UTF-8 without NUL, which is what Postgres' text can compare.
func textParam(r *http.Request, name string) (string, error) {
	s := r.URL.Query().Get(name)
	if len(s) > 256 || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return "", badParam("%s must be at most 256 bytes of UTF-8 text without NUL", name)
	}
	return s, nil
}

// limitParam reads ?limit= (default 50, at most 200).
func limitParam(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 50, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 200 {
		return 0, badParam("limit must be a whole number from 1 to 200, got %q", s)
	}
	return n, nil
}

// idParam reads the {id} path parameter.
func idParam(r *http.Request) (int64, error) {
	s := chi.URLParam(r, "id")
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, badParam("id must be a positive whole number, got %q", s)
	}
	return id, nil
}

// timeParam reads an RFC 3339 time; zero when absent. Every form RFC 3339 allows is
// taken: a lower-case "t" or "z", and a space in place of "T" (RFC 3339 §5.6 NOTE),
// which also stands for a "+" sent unencoded in a query string ("…10:00:00 01:00").
func timeParam(r *http.Request, name string) (time.Time, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return time.Time{}, nil
	}
	norm := strings.ToUpper(s)
	if len(norm) > 10 && norm[10] == ' ' {
		norm = norm[:10] + "T" + norm[11:]
	}
	if i := strings.LastIndexByte(norm, ' '); i > 10 { // an offset whose "+" arrived as a space
		norm = norm[:i] + "+" + norm[i+1:]
	}
	t, err := time.Parse(time.RFC3339Nano, norm)
	if err != nil {
		return time.Time{}, badParam("%s must be an RFC 3339 time such as 2026-11-25T10:00:00Z (or with an offset, %%2B01:00 in a URL), got %q", name, clip(s))
	}
	return t, nil
}

// cursor is a keyset position with the list it belongs to, so that a cursor from
// one list given to another is refused rather than silently meaning something else.
// Clients see it only as an opaque string.
type cursor struct {
	List string    `json:"l"`
	T    time.Time `json:"t,omitzero"`
	ID   int64     `json:"id"`
}

func encodeCursor(list string, k readmodel.Key) *string {
	b, _ := json.Marshal(cursor{List: list, T: k.T, ID: k.ID})
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

// cursorParam reads ?cursor= for list; nil on the first page.
func cursorParam(r *http.Request, list string) (*readmodel.Key, error) {
	s := r.URL.Query().Get("cursor")
	if s == "" {
		return nil, nil
	}
	var c cursor
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil || c.ID < 1 || c.List == "" {
		return nil, badParam("cursor is not one this API returned; start again without it")
	}
	if c.List != list {
		return nil, badParam("this cursor belongs to the %s list, not to %s; start again without it", c.List, list)
	}
	return &readmodel.Key{T: c.T, ID: c.ID}, nil
}

func badParam(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadParam}, args...)...)
}

// clip shortens a value a client sent before it is echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// paginate cuts rows fetched with limit+1 to a page and its next cursor.
func paginate[T any](rows []T, limit int, list string, key func(T) readmodel.Key) page[T] {
	p := page[T]{Data: rows}
	if len(rows) > limit {
		p.Data = rows[:limit]
		p.NextCursor = encodeCursor(list, key(rows[limit-1]))
	}
	if p.Data == nil {
		p.Data = []T{}
	}
	return p
}

// respond is every JSON handler's adapter: one error path (respondErr), early
// returns in the handlers.
func respond(log *zap.Logger, h func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		status := http.StatusOK
		if s, ok := v.(withStatus); ok && s.status == http.StatusNoContent {
			w.WriteHeader(s.status)
			return
		} else if ok {
			status, v = s.status, s.body
		}
		if err := jsonhttp.Write(w, status, v); err != nil {
			log.Error("api response", zap.String("route", route(r)), zap.String("request_id", reqID(r)), zap.Error(err))
		}
	}
}

// reqID is the request's id, for log lines.
func reqID(r *http.Request) string { return middleware.GetReqID(r.Context()) }

package api

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"inboxd/internal/readmodel"
)

// withParam is a GET whose query string holds name=value, encoded as a client would.
func withParam(name, value string) *http.Request {
	return &http.Request{Method: "GET", URL: &url.URL{Path: "/", RawQuery: url.Values{name: {value}}.Encode()}}
}

// FuzzTimeParam: ?since= is refused as a bad parameter, or read as a time that the
// API's own RFC 3339 form of it reads back to, and that reads the same in lower case
// and with its offset's "+" sent unencoded (a space).
func FuzzTimeParam(f *testing.F) {
	for _, s := range []string{"2026-11-25T10:25:00Z", "2026-11-25t10:25:00z", "2026-11-25 10:25:00Z",
		"2026-11-25T11:25:00 01:00", "2026-11-25T11:25:00.123456789+01:00", "yesterday", "2026-11-25 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		read := func(s string) (time.Time, error) { return timeParam(withParam("since", s), "since") }
		got, err := read(s)
		if err != nil {
			if !errors.Is(err, errBadParam) {
				t.Fatalf("timeParam(%q) = %v, not a bad parameter", s, err)
			}
			return
		}
		if s == "" {
			if !got.IsZero() {
				t.Fatalf("timeParam(\"\") = %v, want the zero time (no filter)", got)
			}
			return
		}
		for _, again := range []string{got.Format(time.RFC3339Nano), strings.ToLower(s), strings.ReplaceAll(s, "+", " ")} {
			if t2, err := read(again); err != nil || !t2.Equal(got) {
				t.Fatalf("timeParam(%q) = %v, but %q reads as %v, %v", s, got, again, t2, err)
			}
		}
	})
}

// FuzzCursorParam: ?cursor= is refused as a bad parameter, or read as a position
// with a positive id whose own cursor reads back to it, and which no other list
// takes.
func FuzzCursorParam(f *testing.F) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	f.Add(*encodeCursor("messages", readmodel.Key{T: at, ID: 7}), "messages")
	f.Add(*encodeCursor("events", readmodel.Key{ID: 1}), "events")
	f.Add(*encodeCursor("messages", readmodel.Key{ID: 1}), "conversations")
	f.Add("eyJsIjoibWVzc2FnZXMiLCJpZCI6MH0", "messages") // id 0
	f.Add("not a cursor", "events")
	f.Fuzz(func(t *testing.T, s, list string) {
		read := func(s, list string) (*readmodel.Key, error) { return cursorParam(withParam("cursor", s), list) }
		k, err := read(s, list)
		if err != nil {
			if !errors.Is(err, errBadParam) {
				t.Fatalf("cursorParam(%q) = %v, not a bad parameter", s, err)
			}
			return
		}
		if k == nil {
			if s != "" {
				t.Fatalf("cursorParam(%q) = nil: only an empty cursor is the first page", s)
			}
			return
		}
		if k.ID < 1 {
			t.Fatalf("cursorParam(%q) = %+v: the id must be positive", s, k)
		}
		again, err := read(*encodeCursor(list, *k), list)
		if err != nil || again == nil || again.ID != k.ID || !again.T.Equal(k.T) {
			t.Fatalf("cursor %q = %+v, but its own cursor reads as %+v, %v", s, k, again, err)
		}
		if _, err := read(s, list+"x"); err == nil {
			t.Fatalf("cursor %q for %q is taken by the list %q", s, list, list+"x")
		}
	})
}

// Package jsonhttp writes inboxd's JSON responses. Every endpoint, webhook or API,
// reports errors in one shape (docs/webhooks.md, docs/api.md):
// {"error":{"code":"…","message":"…"}}.
package jsonhttp

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Write sends v as JSON with the given status. v is encoded before anything is
// sent, so a value that cannot be encoded (a time past year 9999) is answered with
// a 500 in the error shape instead of the status with an empty body; the error is
// returned for the caller's log.
func Write(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		Error(w, http.StatusInternalServerError, "internal",
			"the response could not be encoded, which is a defect in inboxd; report it with this response's X-Request-Id")
		return fmt.Errorf("encode a %d response: %w", status, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n')) // the status is sent; a failed write means the client left
	return nil
}

// Error sends the error shape with a machine-readable code and a message that says
// what was wrong and what to do about it.
func Error(w http.ResponseWriter, status int, code, message string) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = Write(w, status, map[string]body{"error": {Code: code, Message: message}}) // strings always encode
}

// Lazy writes a streamed JSON document: it sends a 200 with Content-Type
// application/json, and Header's entries, at the first write, so that an error
// before any byte can still be answered with a status of its own (and without
// Header, such as a Content-Disposition that would save an error page as the
// document). Started says whether it has sent the 200.
type Lazy struct {
	W       http.ResponseWriter
	Header  http.Header
	Started bool
}

// Start sends the 200 and the headers, unless they are sent already: all a HEAD of
// the document needs.
func (l *Lazy) Start() {
	if l.Started {
		return
	}
	l.Started = true
	h := l.W.Header()
	h.Set("Content-Type", "application/json")
	for k, v := range l.Header {
		h[k] = v
	}
	l.W.WriteHeader(http.StatusOK)
}

func (l *Lazy) Write(p []byte) (int, error) {
	l.Start()
	return l.W.Write(p)
}

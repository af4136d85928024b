package jsonhttp

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestProblem: a body encoding/json refuses is described in the sender's terms:
// where it stops being JSON, or which field holds the wrong kind of value, never the
// Go type it was read into.
func TestProblem(t *testing.T) {
	type shape struct {
		Type string `json:"type"`
		Data *struct {
			MessageID string            `json:"message_id"`
			Count     int               `json:"count"`
			Media     []struct{}        `json:"media"`
			Fields    map[string]string `json:"fields"`
			Ok        bool              `json:"ok"`
		} `json:"data"`
	}
	for _, c := range []struct{ body, want string }{
		{`[1,2]`, "body must be a JSON object, got an array"},
		{`"hi"`, "body must be a JSON object, got a string"},
		{`42`, "body must be a JSON object, got a number"},
		{`{"type":7}`, "type must be a string, got a number"},
		{`{"data":[]}`, "data must be an object, got an array"},
		{`{"data":{"message_id":{}}}`, "data.message_id must be a string, got an object"},
		{`{"data":{"count":"3"}}`, "data.count must be a number, got a string"},
		{`{"data":{"count":1.5}}`, "data.count must be a number, got a number 1.5"},
		{`{"data":{"media":{}}}`, "data.media must be an array, got an object"},
		{`{"data":{"fields":{"a":1}}}`, "data.fields.a must be a string, got a number"},
		{`{"data":{"ok":"yes"}}`, "data.ok must be a boolean, got a string"},
		{`{"type":`, "body is not JSON: unexpected end of JSON input (at byte 8)"},
		{`{"type" "x"}`, "body is not JSON: invalid character '\"' after object key (at byte 9)"},
		{``, "body is empty: a JSON object is wanted"},
	} {
		var v shape
		err := json.Unmarshal([]byte(c.body), &v)
		if err == nil {
			t.Fatalf("%s was read; the case is wrong", c.body)
		}
		if got := Problem(err); got != c.want {
			t.Errorf("Problem of %s = %q, want %q", c.body, got, c.want)
		}
	}
}

// FuzzProblem: whatever a sender posts, the description of why it could not be
// read never panics, is never empty, and never names a Go type.
func FuzzProblem(f *testing.F) {
	for _, s := range []string{`[1]`, `{"type":1}`, `{"data":{"message_id":[]}}`, `{`, ``, `nul`, `{"data":{"count":1e400}}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var v struct {
			Type string `json:"type"`
			Data struct {
				MessageID string `json:"message_id"`
				Count     int    `json:"count"`
			} `json:"data"`
		}
		err := json.Unmarshal([]byte(body), &v)
		if err == nil {
			return
		}
		got := Problem(err)
		if got == "" || strings.Contains(got, "Go value") || strings.Contains(got, "struct") {
			t.Fatalf("Problem(%v) = %q", err, got)
		}
	})
}

// TestProblemOfADecoder: a request body read as the API reads one (a Decoder over a
// MaxBytesReader, unknown fields refused) is described in the same terms.
func TestProblemOfADecoder(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{``, "body is empty: a JSON object is wanted"},
		{`{"contact":`, "body is not JSON: it ends inside a value"},
		{`{"contact":"+1555` + strings.Repeat("5", 64) + `"}`, "body is larger than 48 bytes"},
		{`{"contact":"+15550001111","extra":1}`, `body has a field that is not taken here: "extra"`},
		{`{"contact":5}`, "contact must be a string, got a number"},
		{`{"dry_run":"yes"}`, "dry_run must be a boolean, got a string"},
		{`[]`, "body must be a JSON object, got an array"},
		{`{"contact" 5}`, `body is not JSON: invalid character '5' after object key (at byte 12)`},
	} {
		var v struct {
			Contact string `json:"contact"`
			DryRun  bool   `json:"dry_run"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(nil, readCloser{strings.NewReader(c.body)}, 48))
		dec.DisallowUnknownFields()
		err := dec.Decode(&v)
		if err == nil {
			t.Fatalf("%s was read; the case is wrong", c.body)
		}
		if got := Problem(err); got != c.want {
			t.Errorf("Problem of %s = %q, want %q", c.body, got, c.want)
		}
	}
}

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

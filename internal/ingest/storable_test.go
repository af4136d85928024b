package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// storableCases; refused says that Postgres refuses the input as it is (a case
// where it does not is there to show what is kept, or to bound storage).
var storableCases = []struct {
	name, in, want string
	refused        bool
}{
	{"plain", `{"a":"hi","n":[1,2.5,-3e10]}`, `{"a":"hi","n":[1,2.5,-3e10]}`, false},
	{"NUL escape", `{"text":"a\u0000b"}`, `{"text":"a\ufffdb"}`, true},
	{"escaped backslash before u0000 is text", `{"text":"a\\u0000b"}`, `{"text":"a\\u0000b"}`, false},
	{"surrogate pair kept", `{"e":"\ud83d\ude00"}`, `{"e":"\ud83d\ude00"}`, false},
	{"lone high surrogate", `{"e":"x\ud83dy"}`, `{"e":"x\ufffdy"}`, true},
	{"high surrogate at the end", `{"e":"\ud83d"}`, `{"e":"\ufffd"}`, true},
	{"lone low surrogate", `{"e":"\ude00"}`, `{"e":"\ufffd"}`, true},
	{"two highs", `{"e":"\ud83d\ud83d\ude00"}`, `{"e":"\ufffd\ud83d\ude00"}`, true},
	{"upper-case hex", `{"e":"\u0000\uD83D\uDE00"}`, `{"e":"\ufffd\uD83D\uDE00"}`, true},
	{"invalid UTF-8", "{\"t\":\"a\xffb\xc3\"}", "{\"t\":\"a\uFFFDb\uFFFD\"}", true},
	{"in a key", `{"k\u0000":1}`, `{"k\ufffd":1}`, true},
	{"huge exponent", `{"n":1e200000}`, `{"n":"1e200000"}`, true},
	{"huge negative exponent", `[1E-200000,2]`, `["1E-200000",2]`, true},
	{"exponent at the limit", `[1e1000,1e+0999]`, `[1e1000,1e+0999]`, false},
	{"exponent past the limit: stored as text to bound its size", `[-1.5e+1001]`, `["-1.5e+1001"]`, false},
	{"long digits without exponent", `[` + strings.Repeat("9", 2000) + `]`, `[` + strings.Repeat("9", 2000) + `]`, false},
}

func TestStorable(t *testing.T) {
	for _, tt := range storableCases {
		got := storable([]byte(tt.in))
		if string(got) != tt.want {
			t.Errorf("%s: storable(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
	clean := []byte(`{"a":"hé \ud83d\ude00","b":[1,2]}`)
	if got := storable(clean); &got[0] != &clean[0] {
		t.Error("storable copied a document that needed no change")
	}
}

// TestStorableIsAcceptedByPostgres: every case, as stored, is accepted by jsonb, and
// the inputs marked refused are refused as they are (or the case proves nothing).
func TestStorableIsAcceptedByPostgres(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	for _, tt := range storableCases {
		if err := castJSONB(pool, storable([]byte(tt.in))); err != nil {
			t.Errorf("%s: jsonb refused %q: %v", tt.name, storable([]byte(tt.in)), err)
		}
		if refused := castJSONB(pool, []byte(tt.in)) != nil; refused != tt.refused {
			t.Errorf("%s: Postgres refuses the input: %v, the case says %v", tt.name, refused, tt.refused)
		}
	}
}

func castJSONB(pool *pgxpool.Pool, doc []byte) error {
	_, err := pool.Exec(context.Background(), "SELECT $1::text::jsonb", string(doc))
	return err
}

// hasRefused is an independent check of what jsonb refuses among escapes: \u0000,
// a high surrogate not immediately followed by a low one, a low one not immediately
// after a high one (escaped backslashes skipped).
var escapes = regexp.MustCompile(`\\\\|\\u[0-9a-fA-F]{4}`)

func hasRefused(doc []byte) bool {
	locs := escapes.FindAllIndex(doc, -1)
	code := func(i int) rune {
		if i < 0 || i >= len(locs) || locs[i][1]-locs[i][0] != 6 {
			return -1
		}
		r, _ := hex4(doc, locs[i][0]+2)
		return r
	}
	adjacent := func(i, j int) bool { return i >= 0 && j < len(locs) && locs[i][1] == locs[j][0] }
	for i := range locs {
		c := code(i)
		switch {
		case c == 0:
			return true
		case c >= 0xD800 && c <= 0xDBFF:
			if n := code(i + 1); !adjacent(i, i+1) || n < 0xDC00 || n > 0xDFFF {
				return true
			}
		case c >= 0xDC00 && c <= 0xDFFF:
			if p := code(i - 1); !adjacent(i-1, i) || p < 0xD800 || p > 0xDBFF {
				return true
			}
		}
	}
	return false
}

// FuzzStorable: for any valid JSON document, storable returns valid JSON that is
// UTF-8, holds no escape jsonb refuses, is a fixed point, and is the input itself
// when the input needed nothing.
func FuzzStorable(f *testing.F) {
	for _, tt := range storableCases {
		f.Add([]byte(tt.in))
	}
	f.Add([]byte(`"\\\u0000"`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		if !json.Valid(doc) {
			return
		}
		got := storable(doc)
		if !json.Valid(got) {
			t.Fatalf("storable(%q) = %q, not JSON", doc, got)
		}
		if !utf8.Valid(got) || hasRefused(got) {
			t.Errorf("storable(%q) = %q still holds what jsonb refuses", doc, got)
		}
		if again := storable(got); !bytes.Equal(again, got) {
			t.Errorf("storable is not a fixed point: %q → %q → %q", doc, got, again)
		}
		if utf8.Valid(doc) && !hasRefused(doc) && !bytes.Contains(doc, []byte("e")) && !bytes.Contains(doc, []byte("E")) && !bytes.Equal(doc, got) {
			t.Errorf("storable changed %q, which needed nothing, to %q", doc, got)
		}
	})
}

// TestPoisonContentIsStored: a Twilio Body and Meta messages holding what jsonb
// refuses are acknowledged and stored (with U+FFFD), and the Meta POST's other
// items with them; none of it is a 400 that would lose the message.
func TestPoisonContentIsStored(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	form := url.Values{"MessageSid": {"SMnul"}, "From": {"+15552223333"}, "To": {"+15550001111"}, "Body": {"a\x00b\xff"}}
	if status, body := s.postTwilio(t, form); status != 200 {
		t.Fatalf("twilio Body with NUL: %d %s", status, body)
	}
	meta := `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{` +
		`"metadata":{"phone_number_id":"100"},"contacts":[{"wa_id":"15552223333","profile":{"name":"A\u0000"}}],"messages":[` +
		`{"from":"15552223333","id":"wamid.nul","timestamp":"1","type":"text","text":{"body":"x\u0000y\ud83d"}},` +
		`{"from":"15552223333","id":"wamid.ok","timestamp":"1","type":"text","text":{"body":"fine"}},` +
		`{"from":"15552223333","timestamp":"1","type":"text","text":{"body":"no id"}}]}}]}]}`
	if status, body := s.postMeta(t, meta); status != 200 {
		t.Fatalf("meta POST with a NUL message: %d %s", status, body)
	}
	rows, err := s.pool.Query(context.Background(), "SELECT provider, external_id, payload::text FROM inbound_events ORDER BY provider DESC, external_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var provider, id, payload string
		rows.Scan(&provider, &id, &payload)
		got = append(got, provider+" "+id)
		if id == "SMnul" && !strings.Contains(payload, "a\uFFFDb\uFFFD") {
			t.Errorf("twilio payload %s, want the Body with U+FFFD", payload)
		}
		if id == "wamid.nul" && !strings.Contains(payload, "x\uFFFDy\uFFFD") {
			t.Errorf("meta payload %s, want the text with U+FFFD", payload)
		}
	}
	if len(got) != 4 || got[0] != "twilio SMnul" || !strings.HasPrefix(got[1], "meta invalid:") || got[2] != "meta wamid.nul" || got[3] != "meta wamid.ok" {
		t.Errorf("stored %q, want the Twilio message, both Meta messages and the id-less one under invalid:", got)
	}
}

// postTwilio posts form to the test server's Twilio endpoint, signed.
func (s *testServer) postTwilio(t *testing.T, form url.Values) (int, string) {
	t.Helper()
	return s.send(t, providertest.Request(t, "twilio", s.URL, "", "", "", []byte(form.Encode()), time.Now()))
}

// postMeta posts body to the test server's Meta endpoint, signed.
func (s *testServer) postMeta(t *testing.T, body string) (int, string) {
	t.Helper()
	return s.send(t, providertest.Request(t, "meta", s.URL, "", "", "", []byte(body), time.Now()))
}

// send sends req and returns its status and body.
func (s *testServer) send(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// postRaw posts body to path with one signature header as given (a wrong one).
func (s *testServer) postRaw(t *testing.T, path, contentType, body, sigHeader, sig string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	req.Header.Set(sigHeader, sig)
	return s.send(t, req)
}

// TestRefusedByPostgresIsTheSendersError: a payload Postgres refuses on its merits
// (a data exception: here a trigger standing for a value no storable rewrite
// foresaw) is a 400 naming Postgres's reason, not a 503 that the provider would
// retry for days; the webhooks beside it are stored.
func TestRefusedByPostgresIsTheSendersError(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	s := newTestServer(t, url, Config{})
	_, err := s.pool.Exec(context.Background(), `
CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.external_id = 'refused-by-postgres' THEN
        RAISE EXCEPTION 'a value this database cannot hold' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_one BEFORE INSERT ON inbound_events FOR EACH ROW EXECUTE FUNCTION refuse_one();`)
	if err != nil {
		t.Fatal(err)
	}
	status, body := s.post(t, "refused-by-postgres", "application/json", sampleGeneric("m-refused"), s.secret)
	if status != 400 || !strings.Contains(body, "malformed_payload") || !strings.Contains(body, "a value this database cannot hold") {
		t.Errorf("a payload Postgres refuses: %d %s, want 400 malformed_payload with Postgres's reason", status, body)
	}
	if status, body := s.post(t, "stored-beside-it", "application/json", sampleGeneric("m-ok"), s.secret); status != 200 {
		t.Errorf("the next webhook: %d %s, want 200", status, body)
	}
	if countEvents(t, s.pool, "refused-by-postgres") != 0 || countEvents(t, s.pool, "stored-beside-it") != 1 {
		t.Error("want only the accepted webhook stored")
	}
}

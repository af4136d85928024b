package meta

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// Meta publishes no signature vector for X-Hub-Signature-256; GitHub uses the identical
// scheme and documents one ("Validating webhook deliveries": secret "It's a Secret to
// Everybody", payload "Hello, World!").
const (
	githubSecret = "It's a Secret to Everybody"
	githubBody   = "Hello, World!"
	githubSig    = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
)

func TestVerifyMeta(t *testing.T) {
	tests := []struct {
		name, secret, header, body string
		wantErr                    error
	}{
		{"GitHub docs vector", githubSecret, githubSig, githubBody, nil},
		{"wrong secret", "It's a Secret to Nobody", githubSig, githubBody, provider.ErrBadSignature},
		{"tampered body", githubSecret, githubSig, "Hello, World?", provider.ErrBadSignature},
		{"sha1 header", githubSecret, "sha1=757107ea0eb2509fc211221cce984b8a37570b6d", githubBody, provider.ErrBadSignature},
		{"no prefix", githubSecret, githubSig[7:], githubBody, provider.ErrBadSignature},
		{"not hex", githubSecret, "sha256=zz", githubBody, provider.ErrBadSignature},
		{"missing header", githubSecret, "", githubBody, provider.ErrNoSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.secret, tt.header, []byte(tt.body))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Errorf("verifyMeta = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseMeta(t *testing.T) {
	tests := []struct {
		file string
		want []string // external ids, in order
	}{
		{"text.json", []string{"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="}},
		{"batch.json", []string{"wamid.batch-1", "wamid.batch-2", "wamid.out-1:delivered", "wamid.out-1:read", "wamid.out-2:failed"}},
		{"no_messages.json", nil},
	}
	for _, tt := range tests {
		events, err := parse(readTestdata(t, tt.file))
		if err != nil {
			t.Errorf("%s: %v", tt.file, err)
			continue
		}
		var got []string
		for _, e := range events {
			got = append(got, e.ExternalID)
			// Messages and statuses alike belong to the business number's lane.
			if e.Channel != "106540352242922" {
				t.Errorf("%s: %s has channel %q, want the metadata's phone_number_id 106540352242922", tt.file, e.ExternalID, e.Channel)
			}
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: external ids %q, want %q", tt.file, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%s: external ids %q, want %q", tt.file, got, tt.want)
			}
		}
	}
	for _, bad := range []string{`{`, `{"object":"page","entry":[]}`} {
		if _, err := parse([]byte(bad)); !errors.Is(err, provider.ErrMalformed) {
			t.Errorf("parse(%s) = %v, want provider.ErrMalformed", bad, err)
		}
	}
}

func FuzzVerifyMeta(f *testing.F) {
	f.Add(githubSig, []byte(githubBody))
	f.Add("sha256=", []byte{})
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		if verify(githubSecret, header, body) == nil && string(body) != githubBody {
			// Only an HMAC collision could get here; report it with its inputs.
			t.Errorf("verified header %q for body %q", header, body)
		}
	})
}

func FuzzParseMeta(f *testing.F) {
	for _, name := range []string{"text.json", "batch.json", "media.json", "no_messages.json"} {
		f.Add(readTestdata(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := parse(body)
		if err != nil && !errors.Is(err, provider.ErrMalformed) {
			t.Errorf("error %v does not wrap provider.ErrMalformed", err)
		}
		for _, e := range events {
			if e.ExternalID == "" || len(e.Payload) == 0 {
				t.Errorf("event without id or payload: %+v", e)
			}
		}
	})
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigMetaPost is a POST of n messages from the first n of c contacts.
func bigMetaPost(n, c int) []byte {
	var contacts, messages []string
	for i := range c {
		contacts = append(contacts, fmt.Sprintf(`{"profile":{"name":"Contact %d"},"wa_id":"1555%07d"}`, i, i))
	}
	for i := range n {
		messages = append(messages, fmt.Sprintf(`{"from":"1555%07d","id":"wamid.%d","timestamp":"1","type":"text","text":{"body":"hi"}}`, i, i))
	}
	return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"100"},"contacts":[%s],"messages":[%s]}}]}]}`,
		strings.Join(contacts, ","), strings.Join(messages, ","))
}

// TestParseMetaKeepsOnlyTheSendersContact: each message's event carries its own
// sender's contact, not the envelope's whole list: 300 messages from 400 contacts
// store about what was posted, not 300 copies of the list.
func TestParseMetaKeepsOnlyTheSendersContact(t *testing.T) {
	body := bigMetaPost(300, 400)
	events, err := parse(body)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for i, e := range events {
		stored += len(e.Payload)
		var p Event
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf(`"wa_id":"1555%07d"`, i)
		if len(p.Contacts) != 1 || !strings.Contains(string(p.Contacts[0]), want) {
			t.Fatalf("event %d: contacts %s, want only the sender's (%s)", i, p.Contacts, want)
		}
	}
	if stored > 2*len(body) {
		t.Errorf("a %d-byte POST became %d bytes of payloads, want at most twice the POST", len(body), stored)
	}
}

// TestOpenMeta: the webhook needs both settings; one alone is refused, naming both,
// since the handshake would otherwise accept an empty verify token or the POSTs go
// unchecked. A refused signature names the app secret, and a POST without the
// signature header is refused before its body is read.
func TestOpenMeta(t *testing.T) {
	name := func(k string) string { return "X_" + k }
	both := map[string]string{AppSecretKey: githubSecret, VerifyTokenKey: "verify-me"}
	w, err := open(provider.Config{Values: both, Name: name})
	if err != nil || w == nil {
		t.Fatalf("open(both) = %v, %v; want the webhook", w, err)
	}
	if w, err := open(provider.Config{Name: name}); err != nil || w != nil {
		t.Errorf("open(neither) = %v, %v; want disabled", w, err)
	}
	for _, only := range []string{AppSecretKey, VerifyTokenKey} {
		_, err := open(provider.Config{Values: map[string]string{only: "x"}, Name: name})
		if err == nil || !strings.Contains(err.Error(), "X_"+AppSecretKey) || !strings.Contains(err.Error(), "X_"+VerifyTokenKey) {
			t.Errorf("open(only %s) = %v, want an error naming both settings", only, err)
		}
	}

	if err := w.Headers(http.Header{}); !errors.Is(err, provider.ErrNoSignature) {
		t.Errorf("Headers(none) = %v, want ErrNoSignature before the body is read", err)
	}
	r := httptest.NewRequest(http.MethodPost, "/webhooks/meta", nil)
	r.Header.Set(SignatureHeader, githubSig)
	if err := w.Verify(r, []byte(githubBody), time.Now()); err != nil {
		t.Errorf("Verify(GitHub's vector) = %v", err)
	}
	err = w.Verify(r, []byte("Hello, World?"), time.Now())
	if !errors.Is(err, provider.ErrBadSignature) || !strings.Contains(err.Error(), "X_"+AppSecretKey+" (the app's secret") {
		t.Errorf("Verify(tampered) = %v, want ErrBadSignature naming X_%s as the app's secret", err, AppSecretKey)
	}
}

// TestParseMetaItems: each item stands on its own. One without a usable id (none, too
// long, a status without its status) is kept under "invalid:" and a hash of its
// bytes, the same on a redelivery and different for another item; a message finds
// its sender's contact by wa_id or user id, or the envelope's only contact, and no
// contact by an empty id.
func TestParseMetaItems(t *testing.T) {
	long := strings.Repeat("w", provider.MaxExternalIDBytes+1)
	post := func(contacts, messages, statuses string) []byte {
		return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"100"},"contacts":[%s],"messages":[%s],"statuses":[%s]}}]}]}`,
			contacts, messages, statuses)
	}
	body := post(`{"wa_id":"15550000001"},{"user_id":"US.1"},{"profile":{"name":"no ids"}}`,
		`{"from":"15550000001","id":"wamid.ok"},{"from":"15550000001"},{"from":"15550000002"},{"id":"`+long+`"},{"from_user_id":"US.1","id":"wamid.user"},{"id":"wamid.anon"}`,
		`{"id":"wamid.out","status":"read"},{"id":"wamid.out"},{"status":"read"}`)
	events, err := parse(body)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range events {
		ids = append(ids, e.ExternalID)
	}
	invalid := func(i int) bool {
		id, ok := strings.CutPrefix(ids[i], "invalid:")
		_, err := hex.DecodeString(id)
		return ok && len(id) == 32 && err == nil
	}
	if len(ids) != 9 || ids[0] != "wamid.ok" || ids[4] != "wamid.user" || ids[5] != "wamid.anon" || ids[6] != "wamid.out:read" ||
		!invalid(1) || !invalid(2) || !invalid(3) || !invalid(7) || !invalid(8) {
		t.Fatalf("external ids %q, want the messages' ids, the status's id:status, and invalid:<32 hex> for the rest", ids)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		t.Errorf("external ids %q: two items share one", ids)
	}
	again, _ := parse(body)
	for i := range events {
		if again[i].ExternalID != ids[i] {
			t.Errorf("item %d: %q on a redelivery, %q before", i, again[i].ExternalID, ids[i])
		}
	}

	sender := func(e provider.Event) string {
		var p Event
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(fmt.Sprint(p.Contacts)), "")
	}
	for i, want := range map[int]string{0: `"wa_id":"15550000001"`, 4: `"user_id":"US.1"`, 2: "", 5: ""} {
		if got := sender(events[i]); (want == "") != (got == "[]") || !strings.Contains(got, want) {
			t.Errorf("%s: contacts %s, want %s", ids[i], got, or(want, "none"))
		}
	}
	one, _ := parse(post(`{"wa_id":"15559999999","profile":{"name":"Only"}}`, `{"from":"15550000001","id":"wamid.x"}`, ``))
	if got := sender(one[0]); !strings.Contains(got, "Only") {
		t.Errorf("an envelope's only contact: the message got %s, want it (however its ids are spelled)", got)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// TestHandshakeAnswersPlainText: the challenge is echoed as plain text, so that a
// challenge holding markup is never served as a page.
func TestHandshakeAnswersPlainText(t *testing.T) {
	w := httptest.NewRecorder()
	handshake("verify-me", "X")(w, httptest.NewRequest(http.MethodGet, "/webhooks/meta?hub.mode=subscribe&hub.verify_token=verify-me&hub.challenge=%3Chtml%3E", nil))
	if w.Code != http.StatusOK || w.Body.String() != "<html>" || w.Header().Get("Content-Type") != "text/plain" {
		t.Errorf("handshake = %d %q %q, want 200 <html> as text/plain", w.Code, w.Body.String(), w.Header().Get("Content-Type"))
	}
}

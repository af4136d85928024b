package meta

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

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

// Package generic is the Standard Webhooks provider (https://www.standardwebhooks.com):
// any sender that signs the standard way, Svix-powered senders included, with the
// normalized payload described in docs/webhooks.md.
package generic

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
)

// Name is the provider's name (the path /webhooks/generic).
const Name = "generic"

// SecretsKey and SendersKey are the settings that enable the provider: whsec_
// secrets and whpk_ public keys, comma-separated, shared by every sender (SecretsKey)
// or each naming one sender (SendersKey: name:whsec_…), whose events are then stored
// apart, under the provider name generic:name.
const (
	SecretsKey = "GENERIC_SECRETS"
	SendersKey = "GENERIC_SENDERS"
)

// Provider is the Standard Webhooks provider.
var Provider = &provider.Provider{
	Name: Name,
	Settings: []provider.Setting{{
		Key:    SecretsKey,
		Usage:  "Standard Webhooks secrets (whsec_…) and public keys (whpk_…), comma-separated; enables /webhooks/generic",
		Secret: true,
	}, {
		Key:    SendersKey,
		Usage:  "per-sender Standard Webhooks keys, name:whsec_… or name:whpk_…, comma-separated; each sender's events are stored apart (provider generic:name), so one cannot suppress another's by reusing an id; also enables /webhooks/generic",
		Secret: true,
	}},
	Enable: []string{SecretsKey, SendersKey},
	Protected: map[string][]string{
		"/type": nil, "/timestamp": nil, "/data/message_id": nil, "/data/status": nil,
		"/data/channel": {"hash"}, "/data/contact": {"hash"},
	},
	Open:         open,
	Normalize:    Normalize,
	Describe:     describe,
	Example:      Example,
	Sign:         sign,
	SignWith:     SecretsKey,
	SenderSecret: senderSecret,
}

// senderSecret is the key of sender in SendersKey (name:whsec_… or name:whpk_…).
func senderSecret(c provider.Config, sender string) (string, error) {
	var names []string
	for _, v := range c.List(SendersKey) {
		name, key, _ := strings.Cut(v, ":")
		if name == sender {
			return key, nil
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return "", fmt.Errorf("%s is not set, so there is no sender %q", c.SettingName(SendersKey), sender)
	}
	return "", fmt.Errorf("%s names no sender %q; it names %s", c.SettingName(SendersKey), sender, strings.Join(names, ", "))
}

func open(c provider.Config) (*provider.Webhook, error) {
	shared, named := c.List(SecretsKey), c.List(SendersKey)
	if len(shared) == 0 && len(named) == 0 {
		return nil, nil
	}
	keys, err := ParseKeys(shared)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.SettingName(SecretsKey), err)
	}
	senders, err := ParseSenders(named)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.SettingName(SendersKey), err)
	}
	keys = keys.join(senders)
	return &provider.Webhook{
		KeepHeaders:  []string{"Webhook-Id", "Webhook-Timestamp", "Svix-Id", "Svix-Timestamp"},
		MaxBodyBytes: 1 << 20, // a generic event is one message
		MediaTypes:   []string{"application/json"},
		Headers:      checkHeaders,
		Verify: func(r *http.Request, body []byte, now time.Time) error {
			return keys.Verify(readHeaders(r.Header), body, now)
		},
		Parse: func(r *http.Request, body []byte) ([]provider.Event, error) {
			b, err := validate(body)
			if err != nil {
				return nil, err
			}
			sh := readHeaders(r.Header)
			return []provider.Event{{ExternalID: sh.ID, Payload: body, Sender: keys.Sender(sh, body), Channel: b.Data.Channel}}, nil
		},
	}, nil
}

// checkHeaders requires a whole set of signature headers, standard or Svix's, and a
// webhook id within limits, before the body is read.
func checkHeaders(h http.Header) error {
	sh := readHeaders(h)
	if sh.names == "" {
		return provider.RequireHeaders(h, headerNames[0][:]...)
	}
	return provider.CheckID("the "+sh.names+"-id header", sh.ID)
}

// body is a generic payload (docs/webhooks.md).
type body struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      *struct {
		MessageID string           `json:"message_id"`
		Channel   string           `json:"channel"`
		Contact   string           `json:"contact"`
		Text      string           `json:"text"`
		Status    string           `json:"status"`
		Media     []provider.Media `json:"media"`
		Error     json.RawMessage  `json:"error"`
	} `json:"data"`
}

// validate refuses what could never become a message, so that the sender hears
// about it now (400) instead of the event dying later. Normalize relies on what it
// checks, and refuses the same payloads (stored before this check existed, or
// replayed by hand) as permanent.
func validate(raw []byte) (body, error) {
	b, _, err := read(raw)
	if err != nil {
		return b, fmt.Errorf("%w: %v", provider.ErrMalformed, err)
	}
	return b, nil
}

// read parses and checks a payload: the one reading that ingest (validate) and the
// processor (Normalize) share.
func read(raw []byte) (body, time.Time, error) {
	var b body
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, time.Time{}, errors.New(jsonhttp.Problem(err))
	}
	at, err := time.Parse(time.RFC3339, b.Timestamp)
	if err != nil || !provider.InRange(at) {
		return b, time.Time{}, fmt.Errorf("timestamp must be an RFC 3339 time from year 0000 to 9999 in UTC, got %q", b.Timestamp)
	}
	if b.Data == nil || b.Data.MessageID == "" {
		return b, at, fmt.Errorf("data.message_id is required")
	}
	// A number in any spelling ("+1 555 222 3333", "15552223333") is one address, as
	// every provider stores it, so that a search, an export or an erasure finds it.
	b.Data.Channel, b.Data.Contact = provider.E164(b.Data.Channel), provider.E164(b.Data.Contact)
	switch b.Type {
	case "message.received", "message.sent":
		if b.Data.Channel == "" || b.Data.Contact == "" {
			return b, at, fmt.Errorf("%s needs data.channel and data.contact, not blank", b.Type)
		}
	case "message.status":
		if b.Data.Status == "" {
			return b, at, fmt.Errorf("message.status needs data.status")
		}
	default:
		return b, at, fmt.Errorf("type must be message.received, message.sent or message.status, got %q", b.Type)
	}
	return b, at, nil
}

// describe is the payload's type.
func describe(payload []byte) string {
	var b struct{ Type string }
	if json.Unmarshal(payload, &b) != nil || b.Type == "" {
		return "?"
	}
	return b.Type
}

// Example is an inbound text message with message id id.
func Example(id string, now time.Time) []byte {
	return fmt.Appendf(nil, `{"type":"message.received","timestamp":%q,"data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"hello from inboxd sign"}}`,
		now.UTC().Format(time.RFC3339), id)
}

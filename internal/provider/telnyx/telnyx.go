// Package telnyx is the Telnyx Messaging provider (API v2 webhooks): inbound messages
// (message.received), outbound ones (message.sent) and their delivery outcome
// (message.finalized), signed with Ed25519 by Telnyx and checked with the account's
// public key.
package telnyx

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
)

// Name is the provider's name (the path /webhooks/telnyx).
const Name = "telnyx"

// PublicKeyKey is the setting that enables the provider: the account's Ed25519
// public keys, base64 as the Mission Control Portal shows them, comma-separated.
const PublicKeyKey = "TELNYX_PUBLIC_KEY"

// The signature headers: base64 Ed25519 signature of "<timestamp>|<body>", and the
// timestamp in Unix seconds.
const (
	SignatureHeader = "telnyx-signature-ed25519"
	TimestampHeader = "telnyx-timestamp"
)

// Provider is the Telnyx provider.
var Provider = &provider.Provider{
	Name: Name,
	Settings: []provider.Setting{{
		Key:   PublicKeyKey,
		Usage: "Telnyx public keys (Ed25519, base64), comma-separated; enables /webhooks/telnyx",
	}},
	Enable: []string{PublicKeyKey},
	// Carrier and line type of each number: Telnyx looks them up; the inbox never uses them.
	RedactDefaults: []string{"/data/payload/from/carrier", "/data/payload/from/line_type", "/data/payload/to/*/carrier", "/data/payload/to/*/line_type"},
	Protected: map[string][]string{
		"/data/id": nil, "/data/event_type": nil, "/data/payload/id": nil, "/data/payload/to/*/status": nil,
		"/data/payload/from/phone_number": {"hash"}, "/data/payload/to/*/phone_number": {"hash"},
	},
	Open:      open,
	Normalize: Normalize,
	Describe:  describe,
	Example:   Example,
	// SignWith is empty: INBOX_TELNYX_PUBLIC_KEY checks signatures and cannot make one.
	Sign: func(privateKey, _, _ string, body []byte, now time.Time) (http.Header, error) {
		return Headers(privateKey, now, body)
	},
}

func open(c provider.Config) (*provider.Webhook, error) {
	raw := c.List(PublicKeyKey)
	if len(raw) == 0 {
		return nil, nil
	}
	var keys []ed25519.PublicKey
	for i, s := range raw {
		key, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%s: value #%d is not the base64 of a %d-byte Ed25519 public key",
				c.SettingName(PublicKeyKey), i+1, ed25519.PublicKeySize)
		}
		keys = append(keys, key)
	}
	return &provider.Webhook{
		KeepHeaders:  []string{TimestampHeader},
		MaxBodyBytes: 256 << 10, // a Telnyx webhook is one message: a few kilobytes
		MediaTypes:   []string{"application/json"},
		Headers:      func(h http.Header) error { return provider.RequireHeaders(h, SignatureHeader, TimestampHeader) },
		Verify: func(r *http.Request, body []byte, now time.Time) error {
			return verify(keys, r.Header.Get(TimestampHeader), r.Header.Get(SignatureHeader), body, now)
		},
		Parse: func(_ *http.Request, body []byte) ([]provider.Event, error) { return parse(body) },
	}, nil
}

// verify checks the signature of "<timestamp>|<body>" with every key (several allow
// a rotation), and the timestamp against now.
func verify(keys []ed25519.PublicKey, ts, sig string, body []byte, now time.Time) error {
	if ts == "" || sig == "" {
		return provider.ErrNoSignature
	}
	if err := provider.CheckTimestamp(TimestampHeader, ts, now); err != nil {
		return err
	}
	got, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(got) != ed25519.SignatureSize {
		return fmt.Errorf("%w: %s is not a base64 Ed25519 signature", provider.ErrBadSignature, SignatureHeader)
	}
	content := signedContent(ts, body)
	for _, k := range keys {
		if ed25519.Verify(k, content, got) {
			return nil
		}
	}
	return fmt.Errorf("%w: the Ed25519 signature matches none of the %d configured public keys", provider.ErrBadSignature, len(keys))
}

func signedContent(ts string, body []byte) []byte {
	content := make([]byte, 0, len(ts)+1+len(body))
	content = append(content, ts...)
	content = append(content, '|')
	return append(content, body...)
}

// Headers returns the headers with which Telnyx would POST body at now, signed with
// privateKey: the base64 of an Ed25519 private key (64 bytes) or seed (32 bytes).
func Headers(privateKey string, now time.Time, body []byte) (http.Header, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(privateKey))
	switch {
	case err == nil && len(key) == ed25519.SeedSize:
		key = ed25519.NewKeyFromSeed(key)
	case err != nil || len(key) != ed25519.PrivateKeySize:
		return nil, fmt.Errorf("a telnyx signing key is the base64 of an Ed25519 private key (%d bytes) or seed (%d)",
			ed25519.PrivateKeySize, ed25519.SeedSize)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(TimestampHeader, ts)
	h.Set(SignatureHeader, base64.StdEncoding.EncodeToString(ed25519.Sign(ed25519.PrivateKey(key), signedContent(ts, body))))
	return h, nil
}

// webhook is a Telnyx API v2 webhook.
type webhook struct {
	Data struct {
		EventType  string          `json:"event_type"`
		ID         string          `json:"id"`
		OccurredAt string          `json:"occurred_at"`
		Payload    json.RawMessage `json:"payload"`
	} `json:"data"`
}

// parse makes one event of a webhook; its external id is data.id, the webhook's
// event id, which Telnyx keeps across redeliveries.
func parse(body []byte) ([]provider.Event, error) {
	var w webhook
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: not a Telnyx webhook: %s", provider.ErrMalformed, jsonhttp.Problem(err))
	}
	if err := provider.CheckID("data.id", w.Data.ID); err != nil {
		return nil, err
	}
	if w.Data.EventType == "" {
		return nil, fmt.Errorf("%w: data.event_type is required", provider.ErrMalformed)
	}
	return []provider.Event{{ExternalID: w.Data.ID, Payload: body, Channel: ourNumber(w)}}, nil
}

// ourNumber is our number in a message event: the first recipient of an inbound
// message, the sender of an outbound one or of its status; "" when the payload is no
// message.
func ourNumber(w webhook) string {
	var m message
	if json.Unmarshal(w.Data.Payload, &m) != nil {
		return ""
	}
	if m.Direction == "inbound" {
		return firstTo(m)
	}
	return provider.E164(m.From.PhoneNumber)
}

// describe is the event type, with the outcome of a message.finalized.
func describe(payload []byte) string {
	var w webhook
	if json.Unmarshal(payload, &w) != nil || w.Data.EventType == "" {
		return "?"
	}
	if w.Data.EventType == "message.finalized" {
		var m message
		if json.Unmarshal(w.Data.Payload, &m) == nil && len(m.To) > 0 {
			return "message.finalized " + m.To[0].Status
		}
	}
	return w.Data.EventType
}

// Example is an inbound SMS whose message id is id.
func Example(id string, now time.Time) []byte {
	at := now.UTC().Format(time.RFC3339Nano)
	return fmt.Appendf(nil, `{"data":{"event_type":"message.received","id":"evt-%s","occurred_at":%q,"payload":{"id":%q,"direction":"inbound","type":"SMS","from":{"phone_number":"+15552223333"},"to":[{"phone_number":"+15550001111","status":"webhook_delivered"}],"text":"hello from inboxd sign","media":[],"received_at":%q},"record_type":"event"},"meta":{"attempt":1}}`,
		id, at, id, at)
}

// Package meta is the Meta WhatsApp Cloud API provider: messages and statuses, many
// to a POST, signed with the app secret; and the GET verification handshake.
package meta

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
)

// Name is the provider's name (the path /webhooks/meta).
const Name = "meta"

// The settings: both enable the provider.
const (
	AppSecretKey   = "META_APP_SECRET"
	VerifyTokenKey = "META_VERIFY_TOKEN"
)

// SignatureHeader carries "sha256=<hex HMAC-SHA256(app secret, body)>".
const SignatureHeader = "X-Hub-Signature-256"

// Provider is the Meta provider.
var Provider = &provider.Provider{
	Name: Name,
	Settings: []provider.Setting{
		{Key: AppSecretKey, Usage: "Meta app secret; with the verify token enables /webhooks/meta", Secret: true},
		{Key: VerifyTokenKey, Usage: "token Meta echoes in the GET verification handshake", Secret: true},
	},
	Enable:    []string{AppSecretKey, VerifyTokenKey},
	EnableAll: true,
	Protected: map[string][]string{
		"/message/id": nil, "/status/id": nil, "/status/status": nil, "/message/type": nil,
		"/metadata/phone_number_id": {"hash"}, "/message/from": {"hash"}, "/message/from_user_id": {"hash"},
		"/contacts/*/wa_id": {"hash"}, "/contacts/*/user_id": {"hash"},
	},
	// wa_id is the number's digits, without "+".
	Spellings: func(address string) []string { return []string{strings.TrimPrefix(address, "+")} },
	Open:      open,
	Normalize: Normalize,
	Describe:  describe,
	Example:   Example,
	SignWith:  AppSecretKey,
	Sign: func(secret, _, _ string, body []byte, _ time.Time) (http.Header, error) {
		h := http.Header{}
		h.Set("Content-Type", "application/json")
		h.Set(SignatureHeader, Sign(secret, body))
		return h, nil
	},
}

func open(c provider.Config) (*provider.Webhook, error) {
	secret, token := c.Get(AppSecretKey), c.Get(VerifyTokenKey)
	switch {
	case secret == "" && token == "":
		return nil, nil
	case secret == "" || token == "":
		return nil, fmt.Errorf("%s and %s: set both to enable /webhooks/meta, or neither",
			c.SettingName(AppSecretKey), c.SettingName(VerifyTokenKey))
	}
	return &provider.Webhook{
		MediaTypes: []string{"application/json"},
		Headers:    func(h http.Header) error { return provider.RequireHeaders(h, SignatureHeader) },
		Verify: func(r *http.Request, body []byte, _ time.Time) error {
			if err := verify(secret, r.Header.Get(SignatureHeader), body); err != nil {
				return fmt.Errorf("%w: check %s (the app's secret, not a token)", err, c.SettingName(AppSecretKey))
			}
			return nil
		},
		Parse:     func(_ *http.Request, body []byte) ([]provider.Event, error) { return parse(body) },
		Handshake: handshake(token, c.SettingName(VerifyTokenKey)),
	}, nil
}

// handshake serves GET /webhooks/meta, the subscription handshake: Meta sends
// hub.mode=subscribe, our verify token and a challenge to echo back as plain text.
func handshake(token, tokenName string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("hub.mode") != "subscribe" || !hmac.Equal([]byte(q.Get("hub.verify_token")), []byte(token)) {
			jsonhttp.Error(w, http.StatusForbidden, "verification_failed",
				"hub.mode must be subscribe and hub.verify_token must equal "+tokenName)
			return
		}
		// Plain text, whatever the challenge holds (the server adds nosniff to every answer).
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(q.Get("hub.challenge")))
	}
}

// verify checks X-Hub-Signature-256: "sha256=" + hex(HMAC-SHA256(app secret, body)).
func verify(secret, header string, body []byte) error {
	if header == "" {
		return provider.ErrNoSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return fmt.Errorf("%w: %s must be sha256= and hex", provider.ErrBadSignature, SignatureHeader)
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(Sign(secret, body), "sha256="))
	if !hmac.Equal(got, want) {
		return provider.ErrBadSignature
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 header value for body.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Example is a POST with one inbound text message whose id is id.
func Example(id string, now time.Time) []byte {
	return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"0","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"100000000000001"},"contacts":[{"profile":{"name":"Example"},"wa_id":"15552223333"}],"messages":[{"from":"15552223333","id":%q,"timestamp":"%d","type":"text","text":{"body":"hello from inboxd sign"}}]}}]}]}`,
		id, now.Unix())
}

// describe is "status <status>" or "message <type>".
func describe(payload []byte) string {
	var e struct {
		Message *struct{ Type string }   `json:"message"`
		Status  *struct{ Status string } `json:"status"`
	}
	switch {
	case json.Unmarshal(payload, &e) != nil:
		return "?"
	case e.Status != nil:
		return "status " + e.Status.Status
	case e.Message != nil:
		return "message " + e.Message.Type
	}
	return "?"
}

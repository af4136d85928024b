// Package twilio is the Twilio Messaging provider: inbound SMS, MMS and WhatsApp
// messages and status callbacks, as form posts or JSON webhooks.
//
// Twilio retries a webhook once, within about 15 s, so the endpoint must answer fast:
// it verifies, stores and answers an empty TwiML document.
package twilio

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
)

// Name is the provider's name (the path /webhooks/twilio).
const Name = "twilio"

// The settings: auth tokens (primary, secondary) and SharedKey secrets.
const (
	TokensKey     = "TWILIO_AUTH_TOKEN"
	SharedKeysKey = "TWILIO_SHARED_KEYS"
)

// Provider is the Twilio provider.
var Provider = &provider.Provider{
	Name: Name,
	Settings: []provider.Setting{
		{Key: TokensKey, Usage: "Twilio auth tokens, comma-separated (primary,secondary); enables /webhooks/twilio", Secret: true},
		{Key: SharedKeysKey, Usage: "Twilio SharedKey webhook signing secrets, comma-separated (several during a rotation); also enables /webhooks/twilio", Secret: true},
	},
	Enable: []string{TokensKey, SharedKeysKey},
	// Where the numbers are (Twilio looks it up; the inbox never uses it).
	RedactDefaults: []string{"FromCity", "FromState", "FromZip", "FromCountry", "ToCity", "ToState", "ToZip", "ToCountry"},
	Protected: map[string][]string{
		"MessageSid": nil, "SmsSid": nil, "MessageStatus": nil,
		"From": {"hash"}, "To": {"hash"},
	},
	// WhatsApp numbers come as "whatsapp:+1555…" (Address).
	Spellings: func(address string) []string { return []string{"whatsapp:" + address} },
	Open:      open,
	Normalize: Normalize,
	Describe:  describe,
	Example:   Example,
	SignWith:  TokensKey,
	SignsURL:  true, // Twilio signs the URL it calls
	Sign: func(token, endpoint, _ string, body []byte, _ time.Time) (http.Header, error) {
		params, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fmt.Errorf("twilio payload is not a form: %w", err)
		}
		h := http.Header{}
		h.Set("Content-Type", formType)
		h.Set(SignatureHeader, Sign(token, endpoint, params))
		return h, nil
	},
}

const (
	formType = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

// ack is the 200 answer: an empty TwiML document (no reply).
var ack = []byte("<Response></Response>")

func open(c provider.Config) (*provider.Webhook, error) {
	v := verifier{
		tokens: c.List(TokensKey), sharedKeys: c.List(SharedKeysKey),
		base:      strings.TrimRight(c.PublicURL, "/"),
		tokenName: c.SettingName(TokensKey), sharedName: c.SettingName(SharedKeysKey), urlName: c.SettingName("PUBLIC_URL"),
	}
	if len(v.tokens) == 0 && len(v.sharedKeys) == 0 {
		return nil, nil
	}
	return &provider.Webhook{
		KeepHeaders:  []string{"I-Twilio-Idempotency-Token", "X-Home-Region"},
		MaxBodyBytes: 64 << 10, // Twilio posts a few kilobytes (an SMS is at most 1,600 characters)
		MediaTypes:   []string{formType, jsonType},
		Headers:      func(h http.Header) error { return provider.RequireHeaders(h, SignatureHeader) },
		Verify:       v.verify,
		Parse:        parse,
		Ack:          ack,
		AckType:      "text/xml",
	}, nil
}

// parse makes one event of a form post or a JSON webhook. A status callback carries
// MessageStatus; its external id includes the status, because Twilio sends one
// callback per status of the same MessageSid.
//
// A form post is stored as a JSON object of every parameter (a name sent several times
// as an array), so nothing Twilio adds later is lost. A JSON webhook is stored as it
// came; one without a MessageSid is stored too, under a hash of its bytes (stable, so
// a redelivery is a duplicate), and goes dead in processing as unsupported, where an
// operator sees it: nothing Twilio sends is refused for being new.
func parse(r *http.Request, body []byte) ([]provider.Event, error) {
	if isJSON(r) {
		return parseJSON(body)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: form body: %v", provider.ErrMalformed, err)
	}
	fields := make(map[string]any, len(form))
	for name, values := range form {
		if len(values) == 1 {
			fields[name] = values[0]
		} else {
			fields[name] = values
		}
	}
	payload, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", provider.ErrMalformed, err)
	}
	id, err := externalID(form.Get)
	if err != nil {
		return nil, err
	}
	if form.Get("MessageStatus") == "" && (form.Get("From") == "" || form.Get("To") == "") {
		return nil, fmt.Errorf("%w: an inbound message needs From and To", provider.ErrMalformed)
	}
	return []provider.Event{{ExternalID: id, Payload: payload, Channel: ourNumber(form.Get)}}, nil
}

// ourNumber is our number in a webhook: To of an inbound message, From of a status
// callback (a status reports on a message we sent).
func ourNumber(get func(string) string) string {
	if get("MessageStatus") != "" {
		return get("From")
	}
	return get("To")
}

func parseJSON(body []byte) ([]provider.Event, error) {
	var p params
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("%w: %s", provider.ErrMalformed, jsonhttp.Problem(err))
	}
	if p.sid() == "" {
		sum := sha256.Sum256(body)
		return []provider.Event{{ExternalID: "json:" + hex.EncodeToString(sum[:16]), Payload: body}}, nil
	}
	id, err := externalID(p.get)
	if err != nil {
		return nil, err
	}
	return []provider.Event{{ExternalID: id, Payload: body, Channel: ourNumber(p.get)}}, nil
}

// externalID is MessageSid (or the older SmsSid), with ":status" for a status
// callback; get reads a field of the form or of the JSON body.
func externalID(get func(string) string) (string, error) {
	sid := get("MessageSid")
	if sid == "" {
		sid = get("SmsSid")
	}
	if err := provider.CheckID("MessageSid", sid); err != nil {
		return "", err
	}
	if st := get("MessageStatus"); st != "" {
		return sid + ":" + st, nil
	}
	return sid, nil
}

func isJSON(r *http.Request) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Type"))), jsonType)
}

// describe is "status <status>" or "message".
func describe(payload []byte) string {
	var p params
	if json.Unmarshal(payload, &p) != nil {
		return "?"
	}
	if st := p.get("MessageStatus"); st != "" {
		return "status " + st
	}
	if p.sid() == "" {
		return "unsupported"
	}
	return "message"
}

// Example is an inbound SMS with MessageSid id, as a form.
func Example(id string, _ time.Time) []byte {
	return []byte(url.Values{
		"MessageSid": {id}, "AccountSid": {"AC00000000000000000000000000000000"}, "From": {"+15552223333"},
		"To": {"+15550001111"}, "Body": {"hello from inboxd sign"}, "NumMedia": {"0"}, "SmsStatus": {"received"},
	}.Encode())
}

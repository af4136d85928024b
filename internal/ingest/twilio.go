package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Twilio serves POST /webhooks/twilio: inbound messages (SMS and WhatsApp) and status
// callbacks. Twilio retries once, within about 15 s, so this endpoint must answer
// fast: it does no more than verify, store and answer an empty TwiML document.
func (h *Handlers) Twilio() http.HandlerFunc {
	return h.handle(provider{
		name:      "twilio",
		mediaType: "application/x-www-form-urlencoded",
		enabled:   len(h.cfg.TwilioTokens) > 0,
		envHint:   "INBOX_TWILIO_AUTH_TOKEN",
		headers:   func(r *http.Request) error { return requireHeaders(r, "X-Twilio-Signature") },
		verify: func(r *http.Request, body []byte) error {
			params, err := url.ParseQuery(string(body))
			if err != nil {
				return fmt.Errorf("%w: form body: %v", errBadSignature, err)
			}
			fullURL := strings.TrimRight(h.cfg.PublicURL, "/") + r.URL.RequestURI()
			if err := verifyTwilio(h.cfg.TwilioTokens, fullURL, params, r.Header.Get("X-Twilio-Signature")); err != nil {
				// The usual cause is INBOX_PUBLIC_URL not being the URL Twilio calls.
				return fmt.Errorf("%w for URL %s (INBOX_PUBLIC_URL + path and query; it must be the URL configured in Twilio)", err, fullURL)
			}
			return nil
		},
		parse: func(_ *http.Request, body []byte) ([]Event, error) { return parseTwilio(body) },
		ok: func(w http.ResponseWriter, _ []Result) {
			w.Header().Set("Content-Type", "text/xml")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte("<Response></Response>"))
		},
	})
}

// parseTwilio makes one event of a form post. A status callback carries
// MessageStatus; its external id includes the status, because Twilio sends one
// callback per status of the same MessageSid. Every parameter is stored (a name sent
// several times as a JSON array), so nothing Twilio adds later is lost.
func parseTwilio(body []byte) ([]Event, error) {
	params, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("%w: form body: %v", errMalformed, err)
	}
	sid := params.Get("MessageSid")
	if sid == "" {
		sid = params.Get("SmsSid")
	}
	if err := checkID("MessageSid", sid); err != nil {
		return nil, err
	}
	externalID := sid
	if st := params.Get("MessageStatus"); st != "" {
		externalID = sid + ":" + st
	} else if params.Get("From") == "" || params.Get("To") == "" {
		return nil, fmt.Errorf("%w: an inbound message needs From and To", errMalformed)
	}
	fields := make(map[string]any, len(params))
	for name, values := range params {
		if len(values) == 1 {
			fields[name] = values[0]
		} else {
			fields[name] = values
		}
	}
	payload, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return []Event{{ExternalID: externalID, Payload: payload}}, nil
}

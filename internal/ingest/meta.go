package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"inboxd/internal/jsonhttp"
)

// MetaVerify serves GET /webhooks/meta, the subscription handshake: Meta sends
// hub.mode=subscribe, our verify token and a challenge to echo back as plain text.
func (h *Handlers) MetaVerify() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !h.metaEnabled() {
			jsonhttp.Error(w, http.StatusNotFound, "provider_not_configured",
				"the meta webhook is not configured: set INBOX_META_APP_SECRET and INBOX_META_VERIFY_TOKEN to enable it")
			return
		}
		q := r.URL.Query()
		if q.Get("hub.mode") != "subscribe" || !hmac.Equal([]byte(q.Get("hub.verify_token")), []byte(h.cfg.MetaVerifyToken)) {
			jsonhttp.Error(w, http.StatusForbidden, "verification_failed",
				"hub.mode must be subscribe and hub.verify_token must equal INBOX_META_VERIFY_TOKEN")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(q.Get("hub.challenge")))
	}
}

// Meta serves POST /webhooks/meta (WhatsApp Cloud API). One POST may carry several
// messages and statuses; each becomes its own event, all stored in one transaction.
func (h *Handlers) Meta() http.HandlerFunc {
	return h.handle(provider{
		name:      "meta",
		mediaType: "application/json",
		enabled:   h.metaEnabled(),
		envHint:   "INBOX_META_APP_SECRET and INBOX_META_VERIFY_TOKEN",
		verify: func(r *http.Request, body []byte) error {
			return verifyMeta(h.cfg.MetaAppSecret, r.Header.Get("X-Hub-Signature-256"), body)
		},
		parse: func(_ *http.Request, body []byte) ([]Event, error) { return parseMeta(body) },
		ok:    jsonOK,
	})
}

// verifyMeta checks X-Hub-Signature-256: "sha256=" + hex(HMAC-SHA256(app secret, body)).
func verifyMeta(secret, header string, body []byte) error {
	if header == "" {
		return errNoSignature
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil {
		return errBadSignature
	}
	want, _ := hex.DecodeString(strings.TrimPrefix(SignMeta(secret, body), "sha256="))
	if !hmac.Equal(got, want) {
		return errBadSignature
	}
	return nil
}

// SignMeta returns the X-Hub-Signature-256 header value for body.
func SignMeta(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// metaBody is the envelope of a WhatsApp Cloud API webhook. Messages and statuses
// stay raw: the processor reads them, and unknown fields are kept.
type metaBody struct {
	Object string `json:"object"`
	Entry  []struct {
		ID      string `json:"id"`
		Changes []struct {
			Field string `json:"field"`
			Value struct {
				Metadata json.RawMessage   `json:"metadata"`
				Contacts []json.RawMessage `json:"contacts"`
				Messages []json.RawMessage `json:"messages"`
				Statuses []json.RawMessage `json:"statuses"`
			} `json:"value"`
		} `json:"changes"`
	} `json:"entry"`
}

// MetaEvent is the payload stored for one Meta message or status: the item itself
// with the context a normalizer needs (our number's metadata, the sender's contact).
type MetaEvent struct {
	Metadata json.RawMessage   `json:"metadata"`
	Contacts []json.RawMessage `json:"contacts,omitempty"`
	Message  json.RawMessage   `json:"message,omitempty"`
	Status   json.RawMessage   `json:"status,omitempty"`
}

// parseMeta splits a POST into events: external id = the message id, or
// "id:status" for a status (one message gets one callback per status).
func parseMeta(body []byte) ([]Event, error) {
	var b metaBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("%w: body is not a WhatsApp webhook: %v", errMalformed, err)
	}
	if b.Object != "whatsapp_business_account" {
		return nil, fmt.Errorf("%w: object must be whatsapp_business_account, got %q", errMalformed, b.Object)
	}
	var events []Event
	for _, entry := range b.Entry {
		for _, change := range entry.Changes {
			v := change.Value
			for _, m := range v.Messages {
				ev, err := metaEvent(MetaEvent{Metadata: v.Metadata, Contacts: v.Contacts, Message: m}, m, false)
				if err != nil {
					return nil, err
				}
				events = append(events, ev)
			}
			for _, s := range v.Statuses {
				ev, err := metaEvent(MetaEvent{Metadata: v.Metadata, Status: s}, s, true)
				if err != nil {
					return nil, err
				}
				events = append(events, ev)
			}
		}
	}
	return events, nil
}

// metaEvent builds one Event for a message or, with isStatus, a status.
func metaEvent(e MetaEvent, item json.RawMessage, isStatus bool) (Event, error) {
	var ids struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(item, &ids); err != nil || ids.ID == "" {
		return Event{}, fmt.Errorf("%w: every message and status needs an id", errMalformed)
	}
	externalID := ids.ID
	if isStatus {
		if ids.Status == "" {
			return Event{}, fmt.Errorf("%w: status %s has no status field", errMalformed, ids.ID)
		}
		externalID += ":" + ids.Status
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return Event{ExternalID: externalID, Payload: payload}, nil
}

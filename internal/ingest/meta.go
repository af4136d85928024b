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
		headers:   func(r *http.Request) error { return requireHeaders(r, "X-Hub-Signature-256") },
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
// with the context a normalizer needs (our number's metadata and, for a message, its
// sender's entry of the envelope's contacts, not the whole list: a POST of 300
// messages from 400 contacts would otherwise store the list 300 times).
type MetaEvent struct {
	Metadata json.RawMessage   `json:"metadata"`
	Contacts []json.RawMessage `json:"contacts,omitempty"`
	Message  json.RawMessage   `json:"message,omitempty"`
	Status   json.RawMessage   `json:"status,omitempty"`
}

// parseMeta splits a POST into events: external id = the message id, or
// "id:status" for a status (one message gets one callback per status).
//
// Each item stands on its own: one that lacks its id (or whose id is absurdly long)
// is still stored, under "invalid:" and a hash of its bytes (stable, so a redelivery
// is a duplicate), and goes dead in processing where an operator sees it; the rest
// of the POST is stored as usual. Refusing the POST would make Meta redeliver it, and
// fail it, until Meta gives up on all of its messages.
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
			contacts := indexContacts(v.Contacts)
			for _, m := range v.Messages {
				var ids struct {
					ID         string `json:"id"`
					From       string `json:"from"`
					FromUserID string `json:"from_user_id"`
				}
				_ = json.Unmarshal(m, &ids) // an item that is not an object gets an "invalid:" id
				e := MetaEvent{Metadata: v.Metadata, Contacts: contacts.sender(ids.From, ids.FromUserID), Message: m}
				events = append(events, metaEvent(e, m, ids.ID))
			}
			for _, s := range v.Statuses {
				var ids struct{ ID, Status string }
				_ = json.Unmarshal(s, &ids)
				id := ""
				if ids.ID != "" && ids.Status != "" {
					id = ids.ID + ":" + ids.Status
				}
				events = append(events, metaEvent(MetaEvent{Metadata: v.Metadata, Status: s}, s, id))
			}
		}
	}
	return events, nil
}

// metaEvent builds one Event whose external id is id, or an "invalid:" id when id is
// empty or too long.
func metaEvent(e MetaEvent, item json.RawMessage, id string) Event {
	if checkID("id", id) != nil {
		sum := sha256.Sum256(item)
		id = "invalid:" + hex.EncodeToString(sum[:16])
	}
	payload, _ := json.Marshal(e) // raw messages that came out of a successful Unmarshal
	return Event{ExternalID: id, Payload: payload}
}

// metaContacts finds an envelope's contacts by WhatsApp id and by business-scoped
// user id.
type metaContacts struct {
	all            []json.RawMessage
	byWaID, byUser map[string]json.RawMessage
}

func indexContacts(all []json.RawMessage) metaContacts {
	c := metaContacts{all: all, byWaID: map[string]json.RawMessage{}, byUser: map[string]json.RawMessage{}}
	for _, raw := range all {
		var ids struct {
			WaID   string `json:"wa_id"`
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(raw, &ids) == nil {
			c.byWaID[ids.WaID] = raw
			c.byUser[ids.UserID] = raw
		}
	}
	return c
}

// sender returns the sender's contact: the one with its wa_id or user id, or the
// only one (an envelope with one contact names its sender, however the ids are
// spelled; the normalizer relies on that too).
func (c metaContacts) sender(from, fromUserID string) []json.RawMessage {
	if len(c.all) == 1 {
		return c.all
	}
	if raw, ok := c.byWaID[from]; ok && from != "" {
		return []json.RawMessage{raw}
	}
	if raw, ok := c.byUser[fromUserID]; ok && fromUserID != "" {
		return []json.RawMessage{raw}
	}
	return nil
}

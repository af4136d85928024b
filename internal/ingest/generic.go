package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Generic serves POST /webhooks/generic (Standard Webhooks). The external id is the
// webhook-id header, which the spec requires to stay the same across redeliveries.
func (h *Handlers) Generic() http.HandlerFunc {
	return h.handle(provider{
		name:      "generic",
		mediaType: "application/json",
		enabled:   len(h.cfg.GenericSecrets) > 0,
		envHint:   "INBOX_GENERIC_SECRETS",
		headers: func(r *http.Request) error {
			if err := requireHeaders(r, "webhook-id", "webhook-timestamp", "webhook-signature"); err != nil {
				return err
			}
			return checkID("the webhook-id header", r.Header.Get("webhook-id"))
		},
		verify: func(r *http.Request, body []byte) error {
			return verifyGeneric(h.cfg.GenericSecrets, r.Header.Get("webhook-id"),
				r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), body, h.now())
		},
		parse: func(r *http.Request, body []byte) ([]Event, error) {
			if err := validateGeneric(body); err != nil {
				return nil, err
			}
			return []Event{{ExternalID: r.Header.Get("webhook-id"), Payload: body}}, nil
		},
		ok: jsonOK,
	})
}

// genericBody is the part of a generic payload that ingest checks before accepting
// it; the processor reads the rest.
type genericBody struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Data      *struct {
		MessageID string `json:"message_id"`
		Channel   string `json:"channel"`
		Contact   string `json:"contact"`
		Status    string `json:"status"`
	} `json:"data"`
}

// validateGeneric refuses what the processor could never turn into a message, so the
// sender hears about it now (400) instead of the event dying later.
func validateGeneric(body []byte) error {
	var b genericBody
	if err := json.Unmarshal(body, &b); err != nil {
		return fmt.Errorf("%w: body is not JSON: %v", errMalformed, err)
	}
	if _, err := time.Parse(time.RFC3339, b.Timestamp); err != nil {
		return fmt.Errorf("%w: timestamp must be RFC 3339, got %q", errMalformed, b.Timestamp)
	}
	if b.Data == nil || b.Data.MessageID == "" {
		return fmt.Errorf("%w: data.message_id is required", errMalformed)
	}
	switch b.Type {
	case "message.received", "message.sent":
		if b.Data.Channel == "" || b.Data.Contact == "" {
			return fmt.Errorf("%w: %s needs data.channel and data.contact", errMalformed, b.Type)
		}
	case "message.status":
		if b.Data.Status == "" {
			return fmt.Errorf("%w: message.status needs data.status", errMalformed)
		}
	default:
		return fmt.Errorf("%w: type must be message.received, message.sent or message.status, got %q", errMalformed, b.Type)
	}
	return nil
}

package processor

import (
	"encoding/json"
	"fmt"
	"time"
)

// genericPayload is the body of a Standard Webhooks event (docs/webhooks.md).
type genericPayload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      struct {
		MessageID string          `json:"message_id"`
		Channel   string          `json:"channel"`
		Contact   string          `json:"contact"`
		Text      string          `json:"text"`
		Status    string          `json:"status"`
		Media     []Media         `json:"media"`
		Error     json.RawMessage `json:"error"`
	} `json:"data"`
}

// NormalizeGeneric reads message.received, message.sent and message.status events.
func NormalizeGeneric(payload []byte, receivedAt time.Time) (Normalized, error) {
	var p genericPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return Normalized{}, fmt.Errorf("%w: generic payload: %v", ErrPermanent, err)
	}
	d := p.Data
	// The sender's timestamp is the message time (conversations and messages order
	// by it); a sender that omits it gets the time inboxd stored the event.
	if p.Timestamp.IsZero() {
		p.Timestamp = receivedAt
	}
	if d.MessageID == "" {
		return Normalized{}, fmt.Errorf("%w: generic payload has no data.message_id", ErrPermanent)
	}
	switch p.Type {
	case "message.status":
		if d.Status == "" {
			return Normalized{}, fmt.Errorf("%w: message.status without data.status", ErrPermanent)
		}
		return Normalized{Status: &Status{MessageID: d.MessageID, Status: d.Status, At: p.Timestamp, Error: nullIfEmpty(d.Error)}}, nil
	case "message.received", "message.sent":
		if d.Channel == "" || d.Contact == "" {
			return Normalized{}, fmt.Errorf("%w: %s without data.channel or data.contact", ErrPermanent, p.Type)
		}
		m := &Message{
			ID: d.MessageID, Type: "text", Channel: d.Channel, Contact: d.Contact,
			Text: d.Text, Media: d.Media, SentAt: p.Timestamp,
		}
		if len(d.Media) > 0 && d.Text == "" {
			m.Type = "media"
		}
		// data.channel is always our side and data.contact the other party, whichever
		// way the message went: the conversation key does not depend on direction.
		// Inbound messages start as "received" (rank 0), so any delivery status a
		// sender reports for them still applies; outbound ones start as "sent".
		if p.Type == "message.received" {
			m.Direction, m.Sender, m.Recipient, m.Status = "inbound", d.Contact, d.Channel, "received"
		} else {
			m.Direction, m.Sender, m.Recipient, m.Status = "outbound", d.Channel, d.Contact, "sent"
		}
		return Normalized{Message: m}, nil
	default:
		return Normalized{}, fmt.Errorf("%w: unknown generic type %q", ErrPermanent, p.Type)
	}
}

func nullIfEmpty(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

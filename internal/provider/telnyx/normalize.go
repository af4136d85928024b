package telnyx

import (
	"encoding/json"
	"fmt"
	"time"

	"inboxd/internal/provider"
)

// message is a webhook's data.payload: a Telnyx message.
type message struct {
	ID        string `json:"id"`
	Direction string `json:"direction"`
	From      struct {
		PhoneNumber string `json:"phone_number"`
	} `json:"from"`
	To []struct {
		PhoneNumber string `json:"phone_number"`
		Status      string `json:"status"`
	} `json:"to"`
	Text  string `json:"text"`
	Media []struct {
		URL         string `json:"url"`
		ContentType string `json:"content_type"`
	} `json:"media"`
	ReceivedAt  string          `json:"received_at"`
	SentAt      string          `json:"sent_at"`
	CompletedAt string          `json:"completed_at"`
	Errors      json.RawMessage `json:"errors"`
}

// statuses maps Telnyx's per-recipient statuses onto inboxd's ranked vocabulary.
var statuses = map[string]string{
	"queued": "queued", "sending": "sending", "sent": "sent", "delivered": "delivered",
	"sending_failed": "failed", "delivery_failed": "failed", "delivery_unconfirmed": "sent",
}

// Normalize reads message.received (an inbound message), message.sent (an outbound
// message, sent through the Telnyx API by someone else: it joins its conversation)
// and message.finalized (the outcome of an outbound message: a status). The channel
// is our number and the contact theirs, whichever way the message went.
func Normalize(payload []byte, receivedAt time.Time) (provider.Normalized, error) {
	var w webhook
	if err := json.Unmarshal(payload, &w); err != nil {
		return provider.Normalized{}, fmt.Errorf("%w: telnyx payload: %v", provider.ErrPermanent, err)
	}
	var m message
	if err := json.Unmarshal(w.Data.Payload, &m); err != nil || m.ID == "" {
		return provider.Normalized{}, fmt.Errorf("%w: telnyx %s without data.payload.id (%v)", provider.ErrPermanent, w.Data.EventType, err)
	}
	at := timeOr(w.Data.OccurredAt, receivedAt)
	switch w.Data.EventType {
	case "message.received":
		return inbound(m, timeOr(m.ReceivedAt, at))
	case "message.sent":
		return outbound(m, timeOr(m.SentAt, at))
	case "message.finalized":
		if len(m.To) == 0 || statuses[m.To[0].Status] == "" {
			return provider.Normalized{}, fmt.Errorf("%w: telnyx message.finalized %s without a known to[].status", provider.ErrPermanent, m.ID)
		}
		return provider.Normalized{Status: &provider.Status{
			MessageID: m.ID, Contact: firstTo(m), Status: statuses[m.To[0].Status], At: timeOr(m.CompletedAt, at), Error: provider.NullIfEmpty(emptyList(m.Errors)),
		}}, nil
	default:
		return provider.Normalized{}, fmt.Errorf("%w: unsupported telnyx event type %q (the payload is kept)", provider.ErrPermanent, w.Data.EventType)
	}
}

func inbound(m message, at time.Time) (provider.Normalized, error) {
	contact, channel := provider.E164(m.From.PhoneNumber), firstTo(m)
	if contact == "" || channel == "" {
		return provider.Normalized{}, fmt.Errorf("%w: telnyx message %s without from or to", provider.ErrPermanent, m.ID)
	}
	return provider.Normalized{Message: content(&provider.Message{
		ID: m.ID, Direction: "inbound", Channel: channel, Contact: contact, Sender: contact, Recipient: channel,
		SentAt: at, Status: "received",
	}, m)}, nil
}

func outbound(m message, at time.Time) (provider.Normalized, error) {
	channel, contact := provider.E164(m.From.PhoneNumber), firstTo(m)
	if channel == "" || contact == "" {
		return provider.Normalized{}, fmt.Errorf("%w: telnyx message %s without from or to", provider.ErrPermanent, m.ID)
	}
	return provider.Normalized{Message: content(&provider.Message{
		ID: m.ID, Direction: "outbound", Channel: channel, Contact: contact, Sender: channel, Recipient: contact,
		SentAt: at, Status: "sent",
	}, m)}, nil
}

// firstTo is the message's first recipient as E.164, "" when it has none (or a blank
// number, which is as missing).
func firstTo(m message) string {
	if len(m.To) == 0 {
		return ""
	}
	return provider.E164(m.To[0].PhoneNumber)
}

// content fills in text, media and type.
func content(msg *provider.Message, m message) *provider.Message {
	msg.Text, msg.Type = m.Text, "text"
	for _, md := range m.Media {
		msg.Media = append(msg.Media, provider.Media{URL: md.URL, ContentType: md.ContentType})
	}
	if len(msg.Media) > 0 && msg.Text == "" {
		msg.Type = provider.MediaKind(msg.Media[0].ContentType)
	}
	return msg
}

// timeOr parses an RFC 3339 time, falling back to def when it is not one or
// provider.InRange refuses it.
func timeOr(s string, def time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !provider.InRange(t) {
		return def
	}
	return t.UTC()
}

// emptyList is raw, or nil for an empty JSON array (no errors).
func emptyList(raw json.RawMessage) json.RawMessage {
	if string(raw) == "[]" {
		return nil
	}
	return raw
}

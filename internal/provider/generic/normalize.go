package generic

import (
	"fmt"

	"time"

	"inboxd/internal/provider"
)

// Normalize reads message.received, message.sent and message.status events.
func Normalize(payload []byte, _ time.Time) (provider.Normalized, error) {
	b, at, err := read(payload)
	if err != nil {
		return provider.Normalized{}, fmt.Errorf("%w: generic payload: %v", provider.ErrPermanent, err)
	}
	d := b.Data
	if b.Type == "message.status" {
		return provider.Normalized{Status: &provider.Status{MessageID: d.MessageID, Contact: d.Contact, Status: d.Status, At: at, Error: provider.NullIfEmpty(d.Error)}}, nil
	}
	m := &provider.Message{
		ID: d.MessageID, Type: "text", Channel: d.Channel, Contact: d.Contact,
		Text: d.Text, Media: d.Media, SentAt: at,
	}
	if len(d.Media) > 0 && d.Text == "" {
		m.Type = "media"
	}
	// data.channel is always our side and data.contact the other party, whichever
	// way the message went: the conversation key does not depend on direction.
	// Inbound messages start as "received" (rank 0), so any delivery status a
	// sender reports for them still applies; outbound ones start as "sent".
	if b.Type == "message.received" {
		m.Direction, m.Sender, m.Recipient, m.Status = "inbound", d.Contact, d.Channel, "received"
	} else {
		m.Direction, m.Sender, m.Recipient, m.Status = "outbound", d.Channel, d.Contact, "sent"
	}
	return provider.Normalized{Message: m}, nil
}

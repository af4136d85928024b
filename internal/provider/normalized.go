package provider

import (
	"encoding/json"
	"strings"
	"time"
)

// Normalized is what one stored event means: a message, or a status of a message.
// Exactly one of Message and Status is set.
type Normalized struct {
	Message *Message
	Status  *Status
}

// Contact is the address of the person the event is about (empty if a status does
// not say).
func (n Normalized) Contact() string {
	switch {
	case n.Message != nil:
		return n.Message.Contact
	case n.Status != nil:
		return n.Status.Contact
	}
	return ""
}

// Message is a message in provider-neutral form.
type Message struct {
	ID          string // the provider's message id
	Direction   string // inbound or outbound
	Type        string // text, image, …, unsupported
	Channel     string // our address (the conversation's channel)
	Contact     string // the other party's address (E.164 or provider user id)
	ContactName string
	Sender      string
	Recipient   string
	Text        string
	Media       []Media
	Content     json.RawMessage // type-specific detail, or the raw object of an unsupported type
	SentAt      time.Time
	Status      string // initial status: received (inbound) or the sender's (outbound)
}

// Media is one attachment.
type Media struct {
	URL         string `json:"url,omitempty"`
	ID          string `json:"id,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Caption     string `json:"caption,omitempty"`
}

// Status is a delivery status report for a message.
type Status struct {
	MessageID string
	// Contact is the other party's address, as a Message of the same provider
	// would name it, when the status names it (empty otherwise). It ties the event
	// to its contact for erasure and export; statuses are applied by message id.
	Contact string
	Status  string
	At      time.Time
	Error   json.RawMessage
}

// Normalizer turns one stored payload into its meaning. It is pure (no I/O), so it is
// table-tested and fuzzed on its own. An error wrapping ErrPermanent means the payload
// can never be understood and the event goes dead at once; any other error is retried.
//
// receivedAt is when inboxd stored the event: the message time for providers whose
// payloads carry none (Twilio).
type Normalizer func(payload []byte, receivedAt time.Time) (Normalized, error)

// InRange says whether a provider's time can be stored and written back: the API
// writes times as RFC 3339, whose years run from 0000 to 9999, and reads stored times
// in UTC. A time outside it (year 10000, or 9999-12-31T23:59-23:59) would leave every
// list holding its message unwritable, so normalizers never pass one on.
func InRange(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// NullIfEmpty returns raw, or nil when it is empty or JSON null.
func NullIfEmpty(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return raw
}

// MediaKind maps a MIME type to a message type: image, audio, video or document.
func MediaKind(contentType string) string {
	major, _, _ := strings.Cut(contentType, "/")
	switch major {
	case "image", "audio", "video":
		return major
	default:
		return "document"
	}
}

package twilio

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/provider"
)

// params is a stored Twilio webhook: each name maps to a string, an array when a form
// post sent the name several times, or (JSON webhooks) a number.
type params map[string]json.RawMessage

func (p params) get(name string) string {
	raw, ok := p[name]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var many []string
	if json.Unmarshal(raw, &many) == nil && len(many) > 0 {
		return many[0]
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// sid is the message's id: MessageSid, or the older SmsSid.
func (p params) sid() string {
	if sid := p.get("MessageSid"); sid != "" {
		return sid
	}
	return p.get("SmsSid")
}

// Normalize reads Twilio's inbound-message webhooks (SMS, MMS and WhatsApp) and
// message status callbacks, from form posts and JSON webhooks alike. Twilio's
// payloads carry no time, so the message time is when inboxd received it.
func Normalize(payload []byte, receivedAt time.Time) (provider.Normalized, error) {
	var p params
	if err := json.Unmarshal(payload, &p); err != nil {
		return provider.Normalized{}, fmt.Errorf("%w: twilio payload: %v", provider.ErrPermanent, err)
	}
	sid := p.sid()
	if sid == "" {
		return provider.Normalized{}, fmt.Errorf("%w: unsupported twilio webhook: no MessageSid (the payload is kept)", provider.ErrPermanent)
	}
	// A status callback carries MessageStatus (an inbound message carries only
	// SmsStatus=received). Twilio's documented values are lower case already;
	// lowering guards the rank lookup against a sender that capitalizes.
	if st := p.get("MessageStatus"); st != "" {
		// A status reports on a message we sent: its To is the contact.
		_, contact := Address(p.get("To"))
		return provider.Normalized{Status: &provider.Status{MessageID: sid, Contact: contact, Status: strings.ToLower(st), At: receivedAt, Error: twilioError(p)}}, nil
	}
	kind, contact := Address(p.get("From"))
	toKind, ours := Address(p.get("To"))
	if contact == "" || ours == "" {
		return provider.Normalized{}, fmt.Errorf("%w: twilio message %s without From or To", provider.ErrPermanent, sid)
	}
	// Our channel keeps its kind: Twilio's WhatsApp sender and an SMS number are two
	// channels even when the digits are the same. The contact does not: one person
	// on SMS and WhatsApp is one contact address.
	channel := ours
	if toKind != "" {
		channel = toKind + ":" + ours
	} else if kind != "" {
		channel = kind + ":" + ours
	}
	m := &provider.Message{
		ID: sid, Direction: "inbound", Type: "text", Channel: channel, Contact: contact,
		ContactName: p.get("ProfileName"), Sender: contact, Recipient: channel,
		Text: p.get("Body"), Media: media(p), SentAt: receivedAt, Status: "received",
	}
	switch {
	case p.get("Latitude") != "" && p.get("Longitude") != "":
		m.Type = "location"
		m.Content, _ = json.Marshal(map[string]string{
			"latitude": p.get("Latitude"), "longitude": p.get("Longitude"),
			"address": p.get("Address"), "label": p.get("Label"),
		})
	case len(m.Media) > 0 && m.Text == "":
		m.Type = provider.MediaKind(m.Media[0].ContentType)
	}
	return provider.Normalized{Message: m}, nil
}

// media reads NumMedia and MediaUrlN/MediaContentTypeN.
func media(p params) []provider.Media {
	n, _ := strconv.Atoi(p.get("NumMedia"))
	var out []provider.Media
	for i := range min(n, 10) { // Twilio sends at most 10
		u := p.get(fmt.Sprintf("MediaUrl%d", i))
		if u == "" {
			continue
		}
		out = append(out, provider.Media{URL: u, ContentType: p.get(fmt.Sprintf("MediaContentType%d", i))})
	}
	return out
}

func twilioError(p params) json.RawMessage {
	code := p.get("ErrorCode")
	if code == "" {
		return nil
	}
	b, _ := json.Marshal(map[string]string{"code": code, "message": p.get("ErrorMessage")})
	return b
}

// Address splits Twilio's "whatsapp:+1555…" into the channel kind and E.164
// number. Our channel address keeps the kind ("whatsapp:+1415…"), since an SMS
// number and a WhatsApp sender are different channels even on the same number; the
// contact is the bare number, the same person on either.
// Spaces around it or its kind are not part of either.
func Address(s string) (kind, number string) {
	s = strings.TrimSpace(s)
	if k, rest, ok := strings.Cut(s, ":"); ok && !strings.HasPrefix(s, "+") {
		return strings.TrimSpace(k), provider.E164(rest)
	}
	return "", provider.E164(s)
}

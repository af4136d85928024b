package processor

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// twilioParams is a stored Twilio form post: each name maps to a string, or to an
// array when Twilio sent the name several times (ingest keeps every parameter).
type twilioParams map[string]json.RawMessage

func (p twilioParams) get(name string) string {
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
	return ""
}

// NormalizeTwilio reads Twilio's inbound-message webhooks (SMS, MMS and WhatsApp) and
// message status callbacks. Twilio's payloads carry no time, so the message time is
// when inboxd received it.
func NormalizeTwilio(payload []byte, receivedAt time.Time) (Normalized, error) {
	var p twilioParams
	if err := json.Unmarshal(payload, &p); err != nil {
		return Normalized{}, fmt.Errorf("%w: twilio payload: %v", ErrPermanent, err)
	}
	sid := p.get("MessageSid")
	if sid == "" {
		sid = p.get("SmsSid")
	}
	if sid == "" {
		return Normalized{}, fmt.Errorf("%w: twilio payload has no MessageSid", ErrPermanent)
	}
	// A status callback carries MessageStatus (an inbound message carries only
	// SmsStatus=received). Twilio's documented values are lower case already;
	// lowering guards the rank lookup against a sender that capitalizes.
	if st := p.get("MessageStatus"); st != "" {
		return Normalized{Status: &Status{MessageID: sid, Status: strings.ToLower(st), At: receivedAt, Error: twilioError(p)}}, nil
	}
	kind, contact := twilioAddress(p.get("From"))
	toKind, ours := twilioAddress(p.get("To"))
	if contact == "" || ours == "" {
		return Normalized{}, fmt.Errorf("%w: twilio message %s without From or To", ErrPermanent, sid)
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
	m := &Message{
		ID: sid, Direction: "inbound", Type: "text", Channel: channel, Contact: contact,
		ContactName: p.get("ProfileName"), Sender: contact, Recipient: channel,
		Text: p.get("Body"), Media: twilioMedia(p), SentAt: receivedAt, Status: "received",
	}
	switch {
	case p.get("Latitude") != "" && p.get("Longitude") != "":
		m.Type = "location"
		m.Content, _ = json.Marshal(map[string]string{
			"latitude": p.get("Latitude"), "longitude": p.get("Longitude"),
			"address": p.get("Address"), "label": p.get("Label"),
		})
	case len(m.Media) > 0 && m.Text == "":
		m.Type = mediaKind(m.Media[0].ContentType)
	}
	return Normalized{Message: m}, nil
}

// twilioMedia reads NumMedia and MediaUrlN/MediaContentTypeN.
func twilioMedia(p twilioParams) []Media {
	n, _ := strconv.Atoi(p.get("NumMedia"))
	var media []Media
	for i := range min(n, 10) { // Twilio sends at most 10
		u := p.get(fmt.Sprintf("MediaUrl%d", i))
		if u == "" {
			continue
		}
		media = append(media, Media{URL: u, ContentType: p.get(fmt.Sprintf("MediaContentType%d", i))})
	}
	return media
}

func twilioError(p twilioParams) json.RawMessage {
	code := p.get("ErrorCode")
	if code == "" {
		return nil
	}
	b, _ := json.Marshal(map[string]string{"code": code, "message": p.get("ErrorMessage")})
	return b
}

// mediaKind maps a MIME type to a message type.
func mediaKind(contentType string) string {
	major, _, _ := strings.Cut(contentType, "/")
	switch major {
	case "image", "audio", "video":
		return major
	default:
		return "document"
	}
}

package meta

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/provider"
)

// stored is an Event (parse.go) as Normalize reads it: the item with its envelope's
// metadata and contacts.
type stored struct {
	Metadata struct {
		PhoneNumberID      string `json:"phone_number_id"`
		DisplayPhoneNumber string `json:"display_phone_number"`
	} `json:"metadata"`
	Contacts []struct {
		WaID    string `json:"wa_id"`
		UserID  string `json:"user_id"`
		Profile struct {
			Name string `json:"name"`
		} `json:"profile"`
	} `json:"contacts"`
	Message json.RawMessage `json:"message"`
	Status  json.RawMessage `json:"status"`
}

type metaMedia struct {
	ID       string `json:"id"`
	MimeType string `json:"mime_type"`
	Caption  string `json:"caption"`
	Filename string `json:"filename"`
}

type metaMessage struct {
	From        string                 `json:"from"`
	FromUserID  string                 `json:"from_user_id"` // business-scoped user id (BSUID)
	ID          string                 `json:"id"`
	Timestamp   string                 `json:"timestamp"`
	Type        string                 `json:"type"`
	Text        *struct{ Body string } `json:"text"`
	Image       *metaMedia             `json:"image"`
	Audio       *metaMedia             `json:"audio"`
	Video       *metaMedia             `json:"video"`
	Document    *metaMedia             `json:"document"`
	Sticker     *metaMedia             `json:"sticker"`
	Location    json.RawMessage        `json:"location"`
	Interactive *struct {
		ButtonReply *struct{ ID, Title string } `json:"button_reply"`
		ListReply   *struct{ ID, Title string } `json:"list_reply"`
	} `json:"interactive"`
	Button   *struct{ Text string } `json:"button"`
	Reaction *struct {
		Emoji string `json:"emoji"`
	} `json:"reaction"`
}

type metaStatus struct {
	ID              string          `json:"id"`
	Status          string          `json:"status"`
	Timestamp       string          `json:"timestamp"`
	RecipientID     string          `json:"recipient_id"`
	RecipientUserID string          `json:"recipient_user_id"`
	Errors          json.RawMessage `json:"errors"`
}

// Normalize reads one WhatsApp Cloud API message or status. The conversation is
// our phone_number_id plus the contact's number (wa_id, as E.164), or the
// business-scoped user id when Meta withholds the number. Message types we do not
// model are kept as type "unsupported" with the raw object: nothing is dropped.
func Normalize(payload []byte, receivedAt time.Time) (provider.Normalized, error) {
	var e stored
	if err := json.Unmarshal(payload, &e); err != nil {
		return provider.Normalized{}, fmt.Errorf("%w: meta payload: %v", provider.ErrPermanent, err)
	}
	if len(e.Status) > 0 {
		return normalizeMetaStatus(e.Status, receivedAt)
	}
	var msg metaMessage
	if err := json.Unmarshal(e.Message, &msg); err != nil || msg.ID == "" {
		return provider.Normalized{}, fmt.Errorf("%w: meta message without an id (%v)", provider.ErrPermanent, err)
	}
	// phone_number_id is our number's id at Meta, not a number: kept as Meta writes
	// it (E.164 would put a "+" before a 15-digit id), trimmed.
	channel := strings.TrimSpace(e.Metadata.PhoneNumberID)
	contact, name := metaContact(e, msg)
	if channel == "" || contact == "" {
		return provider.Normalized{}, fmt.Errorf("%w: meta message %s without phone_number_id or sender", provider.ErrPermanent, msg.ID)
	}
	m := &provider.Message{
		ID: msg.ID, Direction: "inbound", Type: msg.Type, Channel: channel, Contact: contact, ContactName: name,
		Sender: contact, Recipient: channel, SentAt: unixOr(msg.Timestamp, receivedAt), Status: "received",
	}
	fillMetaContent(m, msg, e.Message)
	return provider.Normalized{Message: m}, nil
}

// metaContact: the sender's E.164 number, else their business-scoped user id; and
// their profile name from the envelope's contacts.
//
// The number wins when present so that conversations stay keyed as they always were;
// the BSUID is used only when Meta withholds the number (a user with a username).
// A user seen both ways becomes two conversations: Meta's webhooks give no way to
// join them before the user_changed_user_id / number system messages, which are kept
// as unsupported messages for an operator to act on. An envelope with one contact
// names the sender even if the ids are spelled differently.
func metaContact(e stored, msg metaMessage) (contact, name string) {
	for _, c := range e.Contacts {
		if (msg.From != "" && c.WaID == msg.From) || (msg.FromUserID != "" && c.UserID == msg.FromUserID) || len(e.Contacts) == 1 {
			name = c.Profile.Name
			if msg.From == "" && msg.FromUserID == "" {
				msg.From, msg.FromUserID = c.WaID, c.UserID
			}
		}
	}
	switch {
	case msg.From != "":
		return provider.E164(msg.From), name
	default:
		return provider.E164(msg.FromUserID), name // trimmed, as a search spells it
	}
}

// fillMetaContent sets type, text, media and content from the message's type object.
func fillMetaContent(m *provider.Message, msg metaMessage, raw json.RawMessage) {
	media := map[string]*metaMedia{"image": msg.Image, "audio": msg.Audio, "video": msg.Video, "document": msg.Document, "sticker": msg.Sticker}
	switch {
	case msg.Type == "text" && msg.Text != nil:
		m.Text = msg.Text.Body
	case media[msg.Type] != nil:
		md := media[msg.Type]
		m.Text = md.Caption
		m.Media = []provider.Media{{ID: md.ID, ContentType: md.MimeType, Caption: md.Caption}}
		if md.Filename != "" {
			m.Content, _ = json.Marshal(map[string]string{"filename": md.Filename})
		}
	case msg.Type == "location" && len(msg.Location) > 0:
		m.Content = msg.Location
	case msg.Type == "interactive" && msg.Interactive != nil && msg.Interactive.ButtonReply != nil:
		m.Text, m.Content = msg.Interactive.ButtonReply.Title, rawField(raw, "interactive")
	case msg.Type == "interactive" && msg.Interactive != nil && msg.Interactive.ListReply != nil:
		m.Text, m.Content = msg.Interactive.ListReply.Title, rawField(raw, "interactive")
	case msg.Type == "button" && msg.Button != nil:
		m.Text, m.Content = msg.Button.Text, rawField(raw, "button")
	case msg.Type == "reaction" && msg.Reaction != nil:
		m.Text, m.Content = msg.Reaction.Emoji, rawField(raw, "reaction")
	default:
		m.Type, m.Content = "unsupported", raw
	}
}

func normalizeMetaStatus(raw json.RawMessage, receivedAt time.Time) (provider.Normalized, error) {
	var s metaStatus
	if err := json.Unmarshal(raw, &s); err != nil || s.ID == "" || s.Status == "" {
		return provider.Normalized{}, fmt.Errorf("%w: meta status without id or status (%v)", provider.ErrPermanent, err)
	}
	contact := provider.E164(s.RecipientUserID)
	if s.RecipientID != "" {
		contact = provider.E164(s.RecipientID)
	}
	return provider.Normalized{Status: &provider.Status{MessageID: s.ID, Contact: contact, Status: s.Status, At: unixOr(s.Timestamp, receivedAt), Error: provider.NullIfEmpty(s.Errors)}}, nil
}

// rawField returns one field of a JSON object, raw.
func rawField(raw json.RawMessage, name string) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return nil
	}
	return fields[name]
}

// unixOr parses Meta's unix-seconds string, falling back to def when it is not a
// time after 1970 that provider.InRange accepts.
func unixOr(s string, def time.Time) time.Time {
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec <= 0 {
		return def
	}
	if t := time.Unix(sec, 0).UTC(); provider.InRange(t) {
		return t
	}
	return def
}

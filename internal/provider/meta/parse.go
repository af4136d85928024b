package meta

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
)

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

// Event is the payload stored for one Meta message or status: the item itself
// with the context a normalizer needs (our number's metadata and, for a message, its
// sender's entry of the envelope's contacts, not the whole list: a POST of 300
// messages from 400 contacts would otherwise store the list 300 times).
type Event struct {
	Metadata json.RawMessage   `json:"metadata"`
	Contacts []json.RawMessage `json:"contacts,omitempty"`
	Message  json.RawMessage   `json:"message,omitempty"`
	Status   json.RawMessage   `json:"status,omitempty"`
}

// parse splits a POST into events: external id = the message id, or
// "id:status" for a status (one message gets one callback per status).
//
// Each item stands on its own: one that lacks its id (or whose id is absurdly long)
// is still stored, under "invalid:" and a hash of its bytes (stable, so a redelivery
// is a duplicate), and goes dead in processing where an operator sees it; the rest
// of the POST is stored as usual. Refusing the POST would make Meta redeliver it, and
// fail it, until Meta gives up on all of its messages.
func parse(body []byte) ([]provider.Event, error) {
	var b metaBody
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, fmt.Errorf("%w: not a WhatsApp webhook: %s", provider.ErrMalformed, jsonhttp.Problem(err))
	}
	if b.Object != "whatsapp_business_account" {
		return nil, fmt.Errorf("%w: object must be whatsapp_business_account, got %q", provider.ErrMalformed, b.Object)
	}
	var events []provider.Event
	for _, entry := range b.Entry {
		for _, change := range entry.Changes {
			v := change.Value
			channel := phoneNumberID(v.Metadata)
			contacts := indexContacts(v.Contacts)
			for _, m := range v.Messages {
				var ids struct {
					ID         string `json:"id"`
					From       string `json:"from"`
					FromUserID string `json:"from_user_id"`
				}
				_ = json.Unmarshal(m, &ids) // an item that is not an object gets an "invalid:" id
				e := Event{Metadata: v.Metadata, Contacts: contacts.sender(ids.From, ids.FromUserID), Message: m}
				events = append(events, itemEvent(e, m, ids.ID, channel))
			}
			for _, s := range v.Statuses {
				var ids struct{ ID, Status string }
				_ = json.Unmarshal(s, &ids)
				id := ""
				if ids.ID != "" && ids.Status != "" {
					id = ids.ID + ":" + ids.Status
				}
				events = append(events, itemEvent(Event{Metadata: v.Metadata, Status: s}, s, id, channel))
			}
		}
	}
	return events, nil
}

// phoneNumberID is the business number's id in an envelope's metadata (the
// conversation's channel, and the events' lane), or "" when there is none.
func phoneNumberID(metadata json.RawMessage) string {
	var m struct {
		PhoneNumberID string `json:"phone_number_id"`
	}
	_ = json.Unmarshal(metadata, &m) // no metadata: the provider's lane
	return m.PhoneNumberID
}

// itemEvent builds one provider.Event whose external id is id, or an "invalid:" id when id is
// empty or too long.
func itemEvent(e Event, item json.RawMessage, id, channel string) provider.Event {
	if provider.CheckID("id", id) != nil {
		sum := sha256.Sum256(item)
		id = "invalid:" + hex.EncodeToString(sum[:16])
	}
	payload, _ := json.Marshal(e) // raw messages that came out of a successful Unmarshal
	return provider.Event{ExternalID: id, Payload: payload, Channel: channel}
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

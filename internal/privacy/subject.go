// Package privacy answers what a contact may ask of the operator: erase everything
// held about them (erasure, with a receipt), or hand it over (export). It owns the
// erasures table and reads and empties what ingest and the processor wrote; the
// processor's lock discipline (processor.LockContacts) is what makes an erasure safe
// while that contact's webhooks keep arriving. docs/privacy.md has the guarantees.
package privacy

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
	"inboxd/internal/readmodel"
	"inboxd/internal/redact"
)

// ErrBadRequest wraps every reason a subject is refused.
var ErrBadRequest = errors.New("bad request")

// maxAddress bounds an address as typed: far above any phone number or provider
// user id, far below anything that costs memory.
const maxAddress = 256

// Subject is who an erasure or an export is about.
type Subject struct {
	// Address is the contact's address as stored when not redacted: E.164 for a
	// phone number, the provider's user id otherwise.
	Address string
	// Provider limits the subject to one provider's conversations ("" for all).
	Provider string
	// Forms are every value of conversations.contact_address (and
	// inbound_events.contact) under which the contact may be stored: the address, and
	// when the policy hashes addresses, the hash of each way a provider spells it.
	Forms []string
}

// LookedUp is the address as it was looked up, with how it is matched, for saying
// that nothing matched: a number typed without its country code (5552223333 is
// +5552223333, not +15552223333) shows itself.
func (s Subject) LookedUp() string {
	how := "a provider's user id is matched exactly as typed"
	if strings.HasPrefix(s.Address, "+") {
		how = "a phone number is matched in E.164, with its country code: +1 555 123 4567 for a US number"
	}
	return s.Address + " (" + how + ")"
}

// NewSubject checks an address (and optional provider) as a user typed them and
// works out the forms it may be stored under. policy may be nil.
func NewSubject(address, providerName string, policy *redact.Policy) (Subject, error) {
	address = strings.TrimSpace(address)
	switch {
	case address == "":
		return Subject{}, fmt.Errorf("%w: contact is required: the contact's phone number (E.164, like +15551234567) or provider user id", ErrBadRequest)
	case len(address) > maxAddress:
		return Subject{}, fmt.Errorf("%w: contact is %d bytes, at most %d", ErrBadRequest, len(address), maxAddress)
	case providerName != "" && !registry.Known(providerName):
		return Subject{}, fmt.Errorf("%w: provider must be one of %s, got %q", ErrBadRequest, strings.Join(registry.Names(), ", "), providerName)
	}
	s := Subject{Address: readmodel.NormalizeContact(address), Provider: providerName}
	s.Forms = []string{s.Address}
	spellings := []string{s.Address, strings.TrimPrefix(s.Address, "+")}
	for _, p := range registry.All {
		if p.Spellings != nil && (providerName == "" || provider.Base(providerName) == p.Name) {
			spellings = append(spellings, p.Spellings(s.Address)...)
		}
	}
	for _, sp := range spellings {
		h, ok := policy.Hashed(sp)
		if !ok {
			break
		}
		// A provider that parses "kind:value" addresses keeps a hashed one's hex alone.
		s.Forms = append(s.Forms, h, strings.TrimPrefix(h, redact.HashPrefix))
	}
	slices.Sort(s.Forms)
	s.Forms = slices.Compact(s.Forms)
	return s, nil
}

// The subject in SQL: $1 is its Forms, $2 its Provider ("" for all; a stored name
// such as "generic:acme" belongs to its provider, "generic").
const (
	// ofProvider is the provider condition on a column named provider.
	ofProvider = `($2::text = '' OR provider = $2::text OR split_part(provider, ':', 1) = $2::text)`
	// subjectConversations selects the ids of the subject's conversations.
	subjectConversations = `SELECT id FROM conversations WHERE contact_address = ANY($1::text[]) AND ` + ofProvider
	// subjectEvents selects the ids of the events about the subject: those that
	// created its messages, and those the processor tied to it (statuses included).
	subjectEvents = `SELECT m.inbound_event_id FROM messages m WHERE m.conversation_id IN (` + subjectConversations + `)
UNION
SELECT id FROM inbound_events WHERE contact = ANY($1::text[]) AND ` + ofProvider
)

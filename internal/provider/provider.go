// Package provider is the seam between inboxd's mechanics and the providers it
// understands. A provider (one package under internal/provider/, listed in
// internal/provider/registry) owns everything about its webhooks: the settings that
// enable it, the signature check, parsing a POST into events, normalizing a stored
// event into a message or a status, describing it for `inboxd tail`, and signing an
// example the way the provider signs (`inboxd sign`, tests and the benchmark).
//
// Ingest and the processor know no provider by name: ingest runs every webhook
// through one pipeline and calls the Webhook's functions; the processor looks a
// stored event's provider up in a map of Normalize functions. docs/architecture.md
// has the recipe for adding a provider.
//
// Polymorphism is a struct of functions, not an interface hierarchy: a provider fills
// in what it has, and a test can build one in a line.
package provider

import (
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// Provider describes one provider. Every field but Handshake and Describe is
// required.
type Provider struct {
	// Name is the provider's name: the path /webhooks/<Name>, the provider column of
	// inbound_events, conversations and messages, and the label of its metrics.
	Name string
	// Settings are the settings the provider reads (Config.Get); cmd/inboxd offers
	// each as a variable and a flag. Enable names the ones that turn it on (any of
	// them; all of them with EnableAll), for the "not configured" answer.
	Settings  []Setting
	Enable    []string
	EnableAll bool
	// Open builds the provider's webhook from its settings. It returns nil and no
	// error when the provider is not configured (disabled), and an error that names
	// the setting when one is set but invalid.
	Open func(c Config) (*Webhook, error)
	// Normalize reads a stored event (see Normalizer).
	Normalize Normalizer
	// Describe names what a stored event is in a few words ("message text",
	// "status delivered"), for `inboxd tail`; it must not return personal data.
	Describe func(payload []byte) string
	// Example returns an example inbound message with message id id, as the provider
	// would POST it (`inboxd sign` without --file).
	Example func(id string, now time.Time) []byte
	// RedactDefaults are the fields removed from every stored payload unless the
	// operator turns the defaults off (INBOX_REDACT_DEFAULTS=off): what the inbox never
	// uses and need not keep (location, device and carrier metadata). Selectors as in
	// internal/redact.
	RedactDefaults []string
	// Protected are the fields the dedupe key or normalization cannot do without,
	// each with the redaction actions it tolerates (none for an id; "hash" for an
	// address, which still groups conversations hashed): a rule that would otherwise
	// touch one refuses to start.
	Protected map[string][]string
	// Spellings, if set, returns the ways the provider writes a contact address
	// (as conversations store it) in its payloads, where they differ from the address
	// itself ("whatsapp:+1555…", Meta's digits without "+"). A hash rule hashes the
	// payload's spelling; erasure and export hash each one to find a contact whose
	// address is stored hashed.
	Spellings func(address string) []string
	// Sign returns the headers (Content-Type included) with which the provider would
	// POST body to endpoint (the full URL), signed with secret. id is the delivery id
	// where the scheme has one.
	Sign func(secret, endpoint, id string, body []byte, now time.Time) (http.Header, error)
	// SignWith is the setting whose first value signs as the provider does, the
	// secret `inboxd sign` takes by default; "" when the settings hold only what
	// checks a signature (a public key), which cannot make one.
	SignWith string
	// SignsURL: the provider signs the URL it calls, so the public URL setting must
	// be that URL (Twilio); `inboxd check` warns when it is a loopback address.
	SignsURL bool
	// SenderSecret, where the provider tells named senders apart ("generic:acme"),
	// returns sender's key from the settings c (what signs as that sender does,
	// unless it is a public key), or an error naming the setting; nil: the provider
	// has no named senders.
	SenderSecret func(c Config, sender string) (string, error)
}

// Webhook is a configured provider's endpoint.
type Webhook struct {
	// MediaTypes are the content types accepted; anything else is answered 415
	// before the body is read.
	MediaTypes []string
	// Headers checks what the headers alone tell (signature headers present, header
	// ids within limits), before the body is read.
	Headers func(h http.Header) error
	// Verify checks the signature over the raw body, received at now. It returns an
	// error wrapping ErrNoSignature, ErrBadSignature or ErrStale.
	Verify func(r *http.Request, body []byte, now time.Time) error
	// Parse turns a verified body into the events to store (at least one), or an
	// error wrapping ErrMalformed.
	Parse func(r *http.Request, body []byte) ([]Event, error)
	// Ack is the body of the 200 answer, with AckType as its content type; nil
	// answers the JSON list of stored events.
	Ack     []byte
	AckType string
	// Handshake, if set, serves GET on the webhook's path (Meta's verification).
	Handshake http.HandlerFunc
	// MaxBodyBytes is the largest body the provider sends, with a margin (0: the
	// service's limit). A body is buffered before its signature can be checked, so
	// this is memory any client can make the service hold.
	MaxBodyBytes int64
	// KeepHeaders are request headers worth storing with each event (ids, idempotency
	// tokens), besides Content-Type and User-Agent. Never a signature or credential.
	KeepHeaders []string
}

// Event is one event a webhook carries, ready to be stored.
type Event struct {
	// ExternalID is the provider's id of the event: a redelivery carries the same
	// one, and (provider, ExternalID) is unique in inbound_events.
	ExternalID string
	// Payload is the JSON document stored in inbound_events.payload and read by
	// Normalize.
	Payload []byte
	// Sender names who sent it, when the provider tells its senders apart (generic's
	// named keys): the event is stored under the provider name "<provider>:<sender>"
	// (Stored), so that senders' ids never collide. Empty for most.
	Sender string
	// Channel is our address the event belongs to (the number or account a message
	// was sent to, or sent from for a status), as the payload names it: the event's
	// lane is its stored provider and this channel (Lane), and claims are fair across
	// lanes (docs/lanes.md). Empty when the payload names none: such events share
	// their provider's lane.
	Channel string
}

// MaxChannel bounds a lane's channel in bytes: longer ones are cut (a lane is a
// grouping, not an identifier; nothing reads it back).
const MaxChannel = 64

// Lane is the lane of an event of the stored provider on channel: "<provider>/<channel>".
// The channel comes from an unauthenticated sender's payload (a generic sender names
// its own), and Postgres text refuses NUL and bytes that are not UTF-8: those become
// U+FFFD, and a long channel is cut on a character boundary, so that a lane can never
// fail the commit it is in.
func Lane(stored, channel string) string {
	channel = strings.ReplaceAll(strings.ToValidUTF8(channel, "\uFFFD"), "\x00", "\uFFFD")
	if len(channel) > MaxChannel {
		n := MaxChannel
		for n > 0 && !utf8.RuneStart(channel[n]) {
			n--
		}
		channel = channel[:n]
	}
	return stored + "/" + channel
}

// Stored is the provider name an event of provider from sender is stored under.
func Stored(provider, sender string) string {
	if sender == "" {
		return provider
	}
	return provider + ":" + sender
}

// Matches reports whether the stored provider name matches a provider filter: the
// name itself, and under a provider's name its named senders' too ("generic"
// matches "generic:acme"; "generic:acme" only itself). MatchSQL says the same in SQL.
func Matches(filter, stored string) bool {
	return stored == filter || strings.HasPrefix(stored, filter+":")
}

// MatchSQL is Matches as an SQL condition on the column col, the filter being the
// text expression param (a placeholder such as $2).
func MatchSQL(col, param string) string {
	return "(" + col + " = " + param + " OR starts_with(" + col + ", " + param + " || ':'))"
}

// Base is the provider a stored provider name belongs to ("generic:acme" → generic).
func Base(stored string) string {
	name, _, _ := strings.Cut(stored, ":")
	return name
}

// Setting is a setting a provider reads. Key is its name without the service's
// prefix: cmd/inboxd turns "TWILIO_AUTH_TOKEN" into the variable
// INBOX_TWILIO_AUTH_TOKEN and the flag --twilio-auth-token.
type Setting struct {
	Key    string
	Usage  string
	Secret bool // never echoed
}

// Config is what Open reads: the values of the provider's settings, by key, and the
// settings every provider may use.
type Config struct {
	// PublicURL is the base URL providers call (Twilio signs it).
	PublicURL string
	// Values maps setting keys to their values (empty: unset).
	Values map[string]string
	// Name returns the name an operator knows a setting by (its variable), for
	// error messages; nil uses the key.
	Name func(key string) string
}

// Get returns the value of the setting key, trimmed.
func (c Config) Get(key string) string { return strings.TrimSpace(c.Values[key]) }

// List returns the comma-separated values of the setting key, blanks left out
// (several values allow rotation: "new,old").
func (c Config) List(key string) []string {
	var out []string
	for _, v := range strings.Split(c.Values[key], ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// SettingName returns the name an operator knows key by.
func (c Config) SettingName(key string) string {
	if c.Name == nil {
		return key
	}
	return c.Name(key)
}

// Endpoint is a provider as configured: its webhook, or nil and how to enable it.
type Endpoint struct {
	*Provider
	Webhook *Webhook // nil: not configured
	// Hint says how to enable a provider that is not configured ("set
	// INBOX_GENERIC_SECRETS"), for its 404 answer.
	Hint string
}

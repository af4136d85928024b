// Package providertest helps tests sign requests the way each provider does, with
// one set of test credentials that enables every provider of the registry.
package providertest

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/registry"
	"inboxd/internal/provider/telnyx"
	"inboxd/internal/provider/twilio"
)

// Test credentials. The generic secret is the Standard Webhooks reference vector's.
const (
	GenericSecret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	TwilioToken     = "twilio-test-token"
	MetaSecret      = "meta-test-secret"
	MetaVerifyToken = "meta-verify-token"
)

// telnyxKey is a fixed Ed25519 key pair standing for a Telnyx account's.
var telnyxKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// TelnyxPrivateKey signs as Telnyx would (base64); TelnyxPublicKey verifies it.
var (
	TelnyxPrivateKey = base64.StdEncoding.EncodeToString(telnyxKey)
	TelnyxPublicKey  = base64.StdEncoding.EncodeToString(telnyxKey.Public().(ed25519.PublicKey))
)

// Settings enables every provider with the test credentials, by setting key.
func Settings() map[string]string {
	return map[string]string{
		generic.SecretsKey:  GenericSecret,
		twilio.TokensKey:    TwilioToken,
		meta.AppSecretKey:   MetaSecret,
		meta.VerifyTokenKey: MetaVerifyToken,
		telnyx.PublicKeyKey: TelnyxPublicKey,
	}
}

// SettingName names a setting key for the libraries' messages in tests: a marker
// prefix, so that a test sees the name went through the naming function (cmd/inboxd
// names them by their variables).
func SettingName(key string) string { return "SETTING_" + key }

// Secret is the signing secret of the named provider's test credentials.
func Secret(name string) string {
	return map[string]string{
		generic.Name: GenericSecret, twilio.Name: TwilioToken, meta.Name: MetaSecret, telnyx.Name: TelnyxPrivateKey,
	}[name]
}

// Endpoints opens every provider with the test credentials for publicURL, with
// override on top (an empty value disables what it enabled).
func Endpoints(t testing.TB, publicURL string, override map[string]string) []provider.Endpoint {
	t.Helper()
	values := Settings()
	for k, v := range override {
		values[k] = v
	}
	endpoints, err := registry.Open(provider.Config{PublicURL: publicURL, Values: values, Name: SettingName})
	if err != nil {
		t.Fatal(err)
	}
	return endpoints
}

// Request builds a POST of body to the named provider's webhook under base (the
// address the test server listens on), signed with secret (Secret(name) when
// empty) at now as the provider signs: over publicURL (what Twilio signs; base
// when empty).
func Request(t testing.TB, name, base, publicURL, secret, id string, body []byte, now time.Time) *http.Request {
	t.Helper()
	p, err := registry.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	if secret == "" {
		secret = Secret(name)
	}
	if publicURL == "" {
		publicURL = base
	}
	h, err := p.Sign(secret, publicURL+"/webhooks/"+name, id, body, now)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", base+"/webhooks/"+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	return req
}

// Channels is how a provider writes our side of a conversation.
type Channels int

const (
	// NumberChannels: a number, stored as provider.E164 writes it (or, with a kind, as
	// Twilio's "whatsapp:+1415…").
	NumberChannels Channels = iota
	// IDChannels: the provider's id of our account (Meta's phone_number_id), which is
	// not a number to normalize: stored as the provider writes it, trimmed.
	IDChannels
)

// CheckNormalized checks what every Normalize promises: an error, or exactly one of
// message and status with the fields the tables require, and addresses spelt as
// stored addresses are (channels as the provider's Channels say).
func CheckNormalized(t *testing.T, n provider.Normalized, err error, channels Channels) {
	t.Helper()
	if err != nil {
		return
	}
	switch {
	case (n.Message == nil) == (n.Status == nil):
		t.Fatalf("want exactly one of message and status, got %+v", n)
	case n.Message != nil && (n.Message.ID == "" || n.Message.Channel == "" || n.Message.Contact == "" ||
		(n.Message.Direction != "inbound" && n.Message.Direction != "outbound")):
		t.Fatalf("message lacks a required field: %+v", n.Message)
	case n.Status != nil && (n.Status.MessageID == "" || n.Status.Status == ""):
		t.Fatalf("status lacks a required field: %+v", n.Status)
	}
	// Addresses are stored as provider.E164 writes them, so that a search, an export
	// or an erasure by the number (which normalizes what it is given) finds them, and
	// one number is one conversation however the payload spelt it; an id channel is
	// stored trimmed.
	spelt := func(addr, how string, spell func(string) string) {
		if spell(addr) != addr {
			t.Fatalf("address %q is stored unnormalized; %s makes it %q", addr, how, spell(addr))
		}
	}
	if n.Message != nil {
		spelt(n.Message.Contact, "provider.E164", provider.E164)
		if channels == IDChannels {
			spelt(n.Message.Channel, "trimming", strings.TrimSpace)
		} else {
			spelt(n.Message.Channel, "provider.E164", provider.E164)
		}
	} else {
		spelt(n.Status.Contact, "provider.E164", provider.E164)
	}
	// The API writes every time as RFC 3339, whose years have four digits: a time
	// it cannot write would empty every list the message appears in.
	var at time.Time
	if n.Message != nil {
		at = n.Message.SentAt
	} else {
		at = n.Status.At
	}
	if _, err := at.UTC().MarshalJSON(); err != nil { // stored, then read back in UTC
		t.Fatalf("the time %v cannot be written as RFC 3339: %v", at, err)
	}
}

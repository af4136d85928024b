package generic

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"inboxd/internal/provider"
)

// Standard Webhooks: the sender signs "<id>.<timestamp>.<body>" and sends one or more
// space-separated signatures, each "<version>,<base64>":
//   - v1: HMAC-SHA256 with a shared secret, given to us as "whsec_<base64>";
//   - v1a: Ed25519 with the sender's private key ("whsk_<base64>"), checked with its
//     public key, given to us as "whpk_<base64>": a leaked whpk_ cannot forge.
//
// A request is valid if any signature matches any key of its version (several keys
// allow rotation, also from one scheme to the other). Svix, where the standard began,
// sends the same three headers named svix-id, svix-timestamp and svix-signature; both
// sets are accepted, and the webhook id is the external id whichever set carried it,
// so one delivery sent under either name is one event.

// headerNames are the two sets of header names: Standard Webhooks', then Svix's.
var headerNames = [][3]string{
	{"webhook-id", "webhook-timestamp", "webhook-signature"},
	{"svix-id", "svix-timestamp", "svix-signature"},
}

// signedHeaders are the signature headers of a request.
type signedHeaders struct {
	ID, Timestamp, Signature string
	names                    string // "webhook" or "svix": the set that carried them; "" if none is whole
}

// readHeaders reads the first whole set of signature headers.
func readHeaders(h http.Header) signedHeaders {
	for _, n := range headerNames {
		sh := signedHeaders{ID: h.Get(n[0]), Timestamp: h.Get(n[1]), Signature: h.Get(n[2])}
		if sh.ID != "" && sh.Timestamp != "" && sh.Signature != "" {
			sh.names, _, _ = strings.Cut(n[0], "-")
			return sh
		}
	}
	return signedHeaders{}
}

// minSecretBytes is the shortest whsec_ secret accepted: 128 bits. (Not 32 bytes:
// Svix, where the format began, issues 24-byte secrets.)
const minSecretBytes = 16

// Keys are the secrets and public keys a request may be signed with, each with the
// sender it identifies ("" for the shared INBOX_GENERIC_SECRETS).
type Keys struct {
	secrets []secret    // v1
	public  []publicKey // v1a
	named   bool        // some key names a sender
}

type secret struct {
	key    []byte
	sender string
}

type publicKey struct {
	key    ed25519.PublicKey
	sender string
}

// senderName is what a sender may be called: it becomes part of the stored provider
// name ("generic:acme").
var senderName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// ParseKeys decodes "whsec_<base64>" secrets and "whpk_<base64>" Ed25519 public keys.
// A value without either prefix is refused: the prefix says which scheme it is for.
func ParseKeys(raw []string) (Keys, error) {
	var k Keys
	return k, k.add(raw, false)
}

// ParseSenders decodes "name:whsec_…" and "name:whpk_…" entries: keys that each
// identify one sender, whose events are stored apart (provider "generic:name").
func ParseSenders(raw []string) (Keys, error) {
	var k Keys
	return k, k.add(raw, true)
}

func (k *Keys) add(raw []string, named bool) error {
	for i, s := range raw {
		s = strings.TrimSpace(s)
		sender := ""
		k.named = k.named || named
		if named {
			var ok bool
			if sender, s, ok = strings.Cut(s, ":"); !ok || !senderName.MatchString(sender) {
				return fmt.Errorf("value #%d: want name:whsec_… or name:whpk_…, the name 1 to 32 lower-case letters, digits, - or _", i+1)
			}
		}
		switch {
		case strings.HasPrefix(s, "whsec_"):
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
			if err != nil || len(key) == 0 {
				return fmt.Errorf("value #%d: whsec_ must be followed by base64", i+1)
			}
			if len(key) < minSecretBytes {
				return fmt.Errorf("value #%d: the whsec_ secret is %d bytes; at least %d are needed (a short secret can be guessed): take the sender's, or make one with `openssl rand -base64 32`",
					i+1, len(key), minSecretBytes)
			}
			k.secrets = append(k.secrets, secret{key, sender})
		case strings.HasPrefix(s, "whpk_"):
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whpk_"))
			if err != nil || len(key) != ed25519.PublicKeySize {
				return fmt.Errorf("value #%d: whpk_ must be followed by the base64 of a %d-byte Ed25519 public key", i+1, ed25519.PublicKeySize)
			}
			k.public = append(k.public, publicKey{ed25519.PublicKey(key), sender})
		default:
			return fmt.Errorf("value #%d is neither a whsec_ secret nor a whpk_ public key (copy it with its prefix, as the sender shows it)", i+1)
		}
	}
	return nil
}

// join returns the keys of both.
func (k Keys) join(o Keys) Keys {
	return Keys{secrets: append(slices.Clone(k.secrets), o.secrets...), public: append(slices.Clone(k.public), o.public...), named: k.named || o.named}
}

// Verify checks the signature headers against body at time now.
func (k Keys) Verify(sh signedHeaders, body []byte, now time.Time) error {
	if sh.names == "" {
		return provider.ErrNoSignature
	}
	if err := provider.CheckTimestamp(sh.names+"-timestamp", sh.Timestamp, now); err != nil {
		return err
	}
	if _, versions, ok := k.match(sh, body); !ok {
		return fmt.Errorf("%w: no signature of %s matches a configured key (%d whsec_ for v1, %d whpk_ for v1a)",
			provider.ErrBadSignature, strings.Join(versions, ", "), len(k.secrets), len(k.public))
	}
	return nil
}

// Sender names the sender whose key signed the request ("" for a shared key, or none).
func (k Keys) Sender(sh signedHeaders, body []byte) string {
	if !k.named {
		return "" // every key is shared: nothing to tell apart (and no second check)
	}
	sender, _, _ := k.match(sh, body)
	return sender
}

// match finds the key that made one of the signatures, and lists their versions.
func (k Keys) match(sh signedHeaders, body []byte) (sender string, versions []string, ok bool) {
	content := signedContent(sh.ID, sh.Timestamp, body)
	var macs [][]byte
	for _, s := range k.secrets {
		macs = append(macs, mac(s.key, content))
	}
	for _, sig := range strings.Fields(sh.Signature) {
		version, b64, _ := strings.Cut(sig, ",")
		versions = append(versions, version)
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		switch version {
		case "v1":
			for i, want := range macs {
				if hmac.Equal(got, want) {
					return k.secrets[i].sender, versions, true
				}
			}
		case "v1a":
			for _, pub := range k.public {
				if ed25519.Verify(pub.key, content, got) {
					return pub.sender, versions, true
				}
			}
		}
	}
	return "", versions, false
}

func signedContent(id, ts string, body []byte) []byte {
	content := make([]byte, 0, len(id)+len(ts)+len(body)+2)
	content = append(content, id...)
	content = append(content, '.')
	content = append(content, ts...)
	content = append(content, '.')
	return append(content, body...)
}

func mac(key, content []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(content)
	return m.Sum(nil)
}

// Signature returns the signature of body as a sender signs it: "v1,<base64>" with a
// whsec_ secret, "v1a,<base64>" with a whsk_ private key (the base64 of an Ed25519
// private key, or of its 32-byte seed).
func Signature(secret, id string, ts int64, body []byte) (string, error) {
	content := signedContent(id, strconv.FormatInt(ts, 10), body)
	switch {
	case strings.HasPrefix(secret, "whsec_"):
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil || len(key) == 0 {
			return "", errors.New("whsec_ must be followed by base64")
		}
		return "v1," + base64.StdEncoding.EncodeToString(mac(key, content)), nil
	case strings.HasPrefix(secret, "whsk_"):
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsk_"))
		switch {
		case err == nil && len(key) == ed25519.SeedSize:
			key = ed25519.NewKeyFromSeed(key)
		case err != nil || len(key) != ed25519.PrivateKeySize:
			return "", fmt.Errorf("whsk_ must be followed by the base64 of an Ed25519 private key (%d bytes) or seed (%d)", ed25519.PrivateKeySize, ed25519.SeedSize)
		}
		return "v1a," + base64.StdEncoding.EncodeToString(ed25519.Sign(ed25519.PrivateKey(key), content)), nil
	}
	return "", errors.New("the secret must start with whsec_ (v1) or whsk_ (v1a)")
}

// Headers returns the signature headers of body, Content-Type included.
func Headers(secret, id string, now time.Time, body []byte) (http.Header, error) {
	ts := now.Unix()
	sig, err := Signature(secret, id, ts, body)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	h.Set("webhook-signature", sig)
	return h, nil
}

func sign(secret, _, id string, body []byte, now time.Time) (http.Header, error) {
	return Headers(secret, id, now, body)
}

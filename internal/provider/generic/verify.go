package generic

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
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

// Keys are the secrets and public keys a request may be signed with.
type Keys struct {
	secrets [][]byte            // v1
	public  []ed25519.PublicKey // v1a
}

// ParseKeys decodes "whsec_<base64>" secrets and "whpk_<base64>" Ed25519 public keys.
// A value without either prefix is refused: the prefix says which scheme it is for.
func ParseKeys(raw []string) (Keys, error) {
	var k Keys
	for i, s := range raw {
		s = strings.TrimSpace(s)
		switch {
		case strings.HasPrefix(s, "whsec_"):
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
			if err != nil || len(key) == 0 {
				return Keys{}, fmt.Errorf("value #%d: whsec_ must be followed by base64", i+1)
			}
			if len(key) < minSecretBytes {
				return Keys{}, fmt.Errorf("value #%d: the whsec_ secret is %d bytes; at least %d are needed (a short secret can be guessed): take the sender's, or make one with `openssl rand -base64 32`",
					i+1, len(key), minSecretBytes)
			}
			k.secrets = append(k.secrets, key)
		case strings.HasPrefix(s, "whpk_"):
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whpk_"))
			if err != nil || len(key) != ed25519.PublicKeySize {
				return Keys{}, fmt.Errorf("value #%d: whpk_ must be followed by the base64 of a %d-byte Ed25519 public key", i+1, ed25519.PublicKeySize)
			}
			k.public = append(k.public, ed25519.PublicKey(key))
		default:
			return Keys{}, fmt.Errorf("value #%d is neither a whsec_ secret nor a whpk_ public key (copy it with its prefix, as the sender shows it)", i+1)
		}
	}
	return k, nil
}

// Verify checks the signature headers against body at time now.
func (k Keys) Verify(sh signedHeaders, body []byte, now time.Time) error {
	if sh.names == "" {
		return provider.ErrNoSignature
	}
	if err := provider.CheckTimestamp(sh.names+"-timestamp", sh.Timestamp, now); err != nil {
		return err
	}
	content := signedContent(sh.ID, sh.Timestamp, body)
	var macs [][]byte
	for _, s := range k.secrets {
		macs = append(macs, mac(s, content))
	}
	var versions []string
	for _, sig := range strings.Fields(sh.Signature) {
		version, b64, _ := strings.Cut(sig, ",")
		versions = append(versions, version)
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		switch version {
		case "v1":
			for _, want := range macs {
				if hmac.Equal(got, want) {
					return nil
				}
			}
		case "v1a":
			for _, pub := range k.public {
				if ed25519.Verify(pub, content, got) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: no signature of %s matches a configured key (%d whsec_ for v1, %d whpk_ for v1a)",
		provider.ErrBadSignature, strings.Join(versions, ", "), len(k.secrets), len(k.public))
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

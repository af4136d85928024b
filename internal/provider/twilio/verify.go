package twilio

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"inboxd/internal/provider"
)

// Twilio signs (https://www.twilio.com/docs/usage/security#validating-requests) the
// full URL it called, then, for a form post, every POST parameter name followed by
// its value, names in sorted order, with HMAC-SHA1 keyed by the account's auth token,
// base64-encoded in X-Twilio-Signature. What the official SDKs learned, and so do we:
//   - the URL may or may not carry a port Twilio saw: we try it as configured,
//     without its port, and with the scheme's default port added;
//   - a name sent several times contributes each of its distinct values, sorted
//     (twilio-python and twilio-node; twilio-go keeps only the first and gets it wrong);
//   - every parameter received is signed, never a typed subset, since Twilio adds
//     parameters without notice;
//   - several tokens are accepted, so that a token can be rotated (primary, secondary);
//   - a single quote may have been signed escaped (%27) or not, whichever way it
//     reaches us (twilio-node tries both).
//
// JSON webhooks sign the URL alone (no parameters are appended); the URL carries
// bodySHA256, the hex SHA-256 of the raw body, which is checked too.
//
// SharedKey signing (Twilio's webhook signing keys): a header
// X-Twilio-Webhooks-Signature-Settings "key=KS…,algorithm=HMAC_SHA1|HMAC_SHA256" says
// the request was signed the same way with a key the customer manages instead of the
// auth token, and with the hash it names.

// SignatureHeader carries the signature; SettingsHeader says a SharedKey signed it.
const (
	SignatureHeader = "X-Twilio-Signature"
	SettingsHeader  = "X-Twilio-Webhooks-Signature-Settings"
)

// The hashes a SharedKey signature may use.
var algorithms = map[string]func() hash.Hash{"HMAC_SHA1": sha1.New, "HMAC_SHA256": sha256.New}

// Sign computes the X-Twilio-Signature of a form post of params to fullURL with an
// auth token.
func Sign(token, fullURL string, params url.Values) string {
	return signWith(sha1.New, token, fullURL, params)
}

// SignShared computes the signature with a SharedKey secret and algorithm
// (HMAC_SHA1 or HMAC_SHA256); params is nil for a JSON webhook.
func SignShared(key, algorithm, fullURL string, params url.Values) string {
	return signWith(algorithms[algorithm], key, fullURL, params)
}

// JSONURL returns fullURL with the bodySHA256 parameter of body added, as Twilio
// calls a JSON webhook.
func JSONURL(fullURL string, body []byte) string {
	sum := sha256.Sum256(body)
	sep := "?"
	if strings.Contains(fullURL, "?") {
		sep = "&"
	}
	return fullURL + sep + "bodySHA256=" + hex.EncodeToString(sum[:])
}

func signWith(h func() hash.Hash, key, fullURL string, params url.Values) string {
	mac := hmac.New(h, []byte(key))
	mac.Write([]byte(fullURL))
	names := make([]string, 0, len(params))
	for name := range params {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		values := slices.Clone(params[name])
		slices.Sort(values)
		for _, v := range slices.Compact(values) {
			mac.Write([]byte(name))
			mac.Write([]byte(v))
		}
	}
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// verifier checks requests against the configured tokens and keys; the names are
// the settings' names, for reasons an operator can act on.
type verifier struct {
	tokens, sharedKeys             []string
	base                           string // INBOX_PUBLIC_URL without a trailing slash
	tokenName, sharedName, urlName string
}

func (v verifier) verify(r *http.Request, body []byte, _ time.Time) error {
	fullURL := v.base + r.URL.RequestURI()
	var params url.Values
	if isJSON(r) {
		if err := checkBodyHash(r.URL.Query().Get("bodySHA256"), body); err != nil {
			return err
		}
	} else {
		var err error
		if params, err = url.ParseQuery(string(body)); err != nil {
			return fmt.Errorf("%w: form body: %v", provider.ErrBadSignature, err)
		}
	}
	header := r.Header.Get(SignatureHeader)
	if settings := r.Header.Get(SettingsHeader); settings != "" {
		return v.verifyShared(settings, fullURL, params, header)
	}
	if len(v.tokens) == 0 {
		return fmt.Errorf("%w: the request is signed with the auth token (no %s header) and %s is not set",
			provider.ErrBadSignature, SettingsHeader, v.tokenName)
	}
	if err := check(sha1.New, v.tokens, fullURL, params, header); err != nil {
		// The signature cannot tell which of the two is wrong; the token is the
		// likelier, so it comes first.
		return provider.WithLogDetail(fmt.Errorf("%w: check %s (the account's auth token), then that %s is the URL Twilio calls",
			err, v.tokenName, v.urlName), "signed URL: "+truncate(fullURL, 200))
	}
	return nil
}

// verifyShared checks a SharedKey signature.
func (v verifier) verifyShared(settings, fullURL string, params url.Values, header string) error {
	alg := settingsValue(settings, "algorithm")
	h, ok := algorithms[alg]
	switch {
	case !ok:
		return fmt.Errorf("%w: SharedKey signature with algorithm %q; HMAC_SHA1 and HMAC_SHA256 are supported",
			provider.ErrBadSignature, truncate(alg, 40))
	case len(v.sharedKeys) == 0:
		return fmt.Errorf("%w: the request is signed with a SharedKey (%s) and %s is not set",
			provider.ErrBadSignature, SettingsHeader, v.sharedName)
	}
	if err := check(h, v.sharedKeys, fullURL, params, header); err != nil {
		return fmt.Errorf("%w: SharedKey %s signature matches none of %s (key %s)",
			err, alg, v.sharedName, truncate(settingsValue(settings, "key"), 40))
	}
	return nil
}

// check compares header with the signature under every key and URL variant.
func check(h func() hash.Hash, keys []string, fullURL string, params url.Values, header string) error {
	if header == "" {
		return fmt.Errorf("%w: %s", provider.ErrNoSignature, SignatureHeader)
	}
	got, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return fmt.Errorf("%w: %s is not base64", provider.ErrBadSignature, SignatureHeader)
	}
	for _, u := range urlVariants(fullURL) {
		for _, key := range keys {
			want, _ := base64.StdEncoding.DecodeString(signWith(h, key, u, params))
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return provider.ErrBadSignature
}

// checkBodyHash compares a JSON webhook's bodySHA256 with the body's hash.
func checkBodyHash(param string, body []byte) error {
	if param == "" {
		return fmt.Errorf("%w: a JSON webhook's URL must carry bodySHA256", provider.ErrNoSignature)
	}
	want, err := hex.DecodeString(param)
	sum := sha256.Sum256(body)
	if err != nil || subtle.ConstantTimeCompare(want, sum[:]) != 1 {
		return fmt.Errorf("%w: bodySHA256 does not match the body", provider.ErrBadSignature)
	}
	return nil
}

// settingsValue reads name from "key=KS…,algorithm=HMAC_SHA256".
func settingsValue(settings, name string) string {
	for _, part := range strings.Split(settings, ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// urlVariants is the URL as given, without any port, and with the default port; each
// also with its single quotes escaped the other way.
func urlVariants(raw string) []string {
	var out []string
	for _, v := range portVariants(raw) {
		out = append(out, v)
		switch {
		case strings.Contains(v, "'"):
			out = append(out, strings.ReplaceAll(v, "'", "%27"))
		case strings.Contains(v, "%27"):
			out = append(out, strings.ReplaceAll(v, "%27", "'"))
		}
	}
	return out
}

func portVariants(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return []string{raw}
	}
	variants := []string{raw}
	host := u.Hostname()
	if u.Port() != "" {
		v := *u
		v.Host = hostOnly(host)
		variants = append(variants, v.String())
	} else if port := map[string]string{"https": "443", "http": "80"}[u.Scheme]; port != "" {
		v := *u
		v.Host = net.JoinHostPort(host, port)
		variants = append(variants, v.String())
	}
	return variants
}

func hostOnly(host string) string {
	if net.ParseIP(host) != nil && net.ParseIP(host).To4() == nil {
		return "[" + host + "]" // IPv6 literal
	}
	return host
}

// truncate shortens what a client sent before it goes into a reason.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

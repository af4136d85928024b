package ingest

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Twilio signs (https://www.twilio.com/docs/usage/security#validating-requests) the
// full URL it called, then every POST parameter name followed by its value, names in
// sorted order, with HMAC-SHA1 keyed by the account's auth token, base64-encoded in
// X-Twilio-Signature. What the official SDKs learned, and so do we:
//   - the URL may or may not carry a port Twilio saw: we try it as configured,
//     without its port, and with the scheme's default port added;
//   - a name sent several times contributes each of its distinct values, sorted
//     (twilio-python and twilio-node; twilio-go keeps only the first and gets it wrong);
//   - every parameter received is signed, never a typed subset, since Twilio adds
//     parameters without notice;
//   - several tokens are accepted, so that a token can be rotated (primary, secondary);
//   - a single quote may have been signed escaped (%27) or not, whichever way it
//     reaches us (twilio-node tries both).

// SignTwilio computes the X-Twilio-Signature of params as posted to fullURL (used by
// verification, tests and the benchmark).
func SignTwilio(token, fullURL string, params url.Values) string {
	mac := hmac.New(sha1.New, []byte(token))
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

// verifyTwilio checks header against every token and URL variant.
func verifyTwilio(tokens []string, fullURL string, params url.Values, header string) error {
	if header == "" {
		return errNoSignature
	}
	got, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return errBadSignature
	}
	for _, u := range urlVariants(fullURL) {
		for _, token := range tokens {
			want, _ := base64.StdEncoding.DecodeString(SignTwilio(token, u, params))
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errBadSignature
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

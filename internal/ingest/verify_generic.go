package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks (https://www.standardwebhooks.com): the sender signs
// "<webhook-id>.<webhook-timestamp>.<body>" with HMAC-SHA256 and sends one or more
// space-separated "v1,<base64>" signatures; a request is valid if any of them matches
// any of our secrets (several secrets allow rotation without downtime).

// timestampTolerance bounds replays: older or future-dated requests are refused.
const timestampTolerance = 5 * time.Minute

var (
	errBadSignature = errors.New("signature does not match")
	errNoSignature  = errors.New("signature header missing")
	errStale        = errors.New("timestamp outside tolerance")
)

// requireHeaders refuses a request that lacks any of the named signature headers,
// before its body is read.
func requireHeaders(r *http.Request, names ...string) error {
	for _, name := range names {
		if r.Header.Get(name) == "" {
			return fmt.Errorf("%w: %s", errNoSignature, name)
		}
	}
	return nil
}

// ParseGenericSecrets decodes "whsec_<base64>" secrets (the prefix is optional).
func ParseGenericSecrets(raw []string) ([][]byte, error) {
	keys := make([][]byte, 0, len(raw))
	for i, s := range raw {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), "whsec_"))
		if err != nil || len(key) == 0 {
			return nil, fmt.Errorf("generic secret #%d is not whsec_ followed by base64", i+1)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// SignGeneric returns the "v1,<base64>" signature of body (used by `inboxd sign`,
// the benchmark, and tests).
func SignGeneric(key []byte, id string, ts int64, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(genericMAC(key, id, strconv.FormatInt(ts, 10), body))
}

func genericMAC(key []byte, id, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// verifyGeneric checks the three Standard Webhooks headers against body at time now.
func verifyGeneric(keys [][]byte, id, ts, sigHeader string, body []byte, now time.Time) error {
	if id == "" || ts == "" || sigHeader == "" {
		return errNoSignature
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds: %w", ts, errBadSignature)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > timestampTolerance || d < -timestampTolerance {
		return fmt.Errorf("%w: webhook-timestamp is %s from this server's clock, more than ±%s", errStale, d.Round(time.Second), timestampTolerance)
	}
	macs := make([][]byte, len(keys))
	for i, k := range keys {
		macs[i] = genericMAC(k, id, ts, body)
	}
	for _, sig := range strings.Fields(sigHeader) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue // other schemes (v1a, …) are not ours to check
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		for _, want := range macs {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errBadSignature
}

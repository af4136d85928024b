package generic

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// vector is a request signed by a sender's own library (internal/provider/vectors
// makes testdata/vectors.json with standardwebhooks and svix from npm).
type vector struct {
	Name       string            `json:"name"`
	Library    string            `json:"library"`
	Configured []string          `json:"configured"`
	Valid      bool              `json:"valid"`
	Now        int64             `json:"now"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
}

func readVectors(t *testing.T) []vector {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestLibraryVectors: what the senders' libraries sign is accepted with the keys it
// was signed for (rotation and scheme changes included) and refused, naming the
// scheme, with another; the webhook id is the external id under either header names;
// and where the scheme is v1, our own signer makes the library's very signature.
func TestLibraryVectors(t *testing.T) {
	for _, v := range readVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			hook, err := open(provider.Config{Values: map[string]string{SecretsKey: strings.Join(v.Configured, ",")}})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("POST", "/webhooks/generic", strings.NewReader(v.Body))
			r.Header.Set("Content-Type", "application/json")
			for k, val := range v.Headers {
				r.Header.Set(k, val)
			}
			if err := hook.Headers(r.Header); err != nil {
				t.Fatalf("headers of %s refused: %v", v.Library, err)
			}
			err = hook.Verify(r, []byte(v.Body), time.Unix(v.Now, 0))
			switch {
			case v.Valid && err != nil:
				t.Fatalf("a request signed by %s is refused: %v", v.Library, err)
			case !v.Valid && !errors.Is(err, provider.ErrBadSignature):
				t.Fatalf("a request signed by %s with a wrong key: %v, want ErrBadSignature", v.Library, err)
			case !v.Valid && !strings.Contains(err.Error(), "v1"):
				t.Errorf("the reason %q does not name the scheme", err)
			}
			if !v.Valid {
				return
			}
			events, err := hook.Parse(r, []byte(v.Body))
			if id := firstOf(v.Headers, "webhook-id", "svix-id"); err != nil || len(events) != 1 || events[0].ExternalID != id {
				t.Errorf("Parse = %+v, %v; want one event with external id %s", events, err, id)
			}
			if sig := firstOf(v.Headers, "webhook-signature", "svix-signature"); !signedByAny(v, sig) {
				t.Errorf("our signer does not make %s's signature %s", v.Library, sig)
			}
		})
	}
}

// vectorSigner is the private key the script signs v1a with (an Ed25519 seed of 32
// fives); Ed25519 signatures are deterministic, so ours must equal the script's.
var vectorSigner = "whsk_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))

// signedByAny: our signer makes sig with one of the configured secrets (rotation
// cases put the signing secret anywhere in the list) or, for v1a, the script's key.
func signedByAny(v vector, sig string) bool {
	for _, secret := range append(v.Configured, vectorSigner) {
		if ours, err := Signature(secret, firstOf(v.Headers, "webhook-id", "svix-id"), v.Now, []byte(v.Body)); err == nil && strings.Contains(sig, ours) {
			return true
		}
	}
	return false
}

func firstOf(h map[string]string, names ...string) string {
	hh := http.Header{}
	for k, v := range h {
		hh.Set(k, v)
	}
	for _, n := range names {
		if v := hh.Get(n); v != "" {
			return v
		}
	}
	return ""
}

package twilio

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider"
)

// vector is a request signed by twilio-node (internal/provider/vectors makes
// testdata/vectors.json with it).
type vector struct {
	Name       string `json:"name"`
	Library    string `json:"library"`
	Configured struct {
		Tokens []string `json:"tokens"`
		Shared []string `json:"shared"`
	} `json:"configured"`
	Valid   bool              `json:"valid"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

const vectorBase = "https://inbox.example.com"

// ReadVectors reads testdata/vectors.json.
func readVectors(t testing.TB) []vector {
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

// TestLibraryVectors: every request twilio-node signs (auth token and SharedKey, form
// posts and JSON webhooks, rotations) is accepted with the keys it was signed for and
// refused with a wrong one, with a reason that names the scheme, never the URL for a
// SharedKey; the JSON webhooks' events are stored as sent.
func TestLibraryVectors(t *testing.T) {
	for _, v := range readVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			hook, err := open(provider.Config{PublicURL: vectorBase, Values: map[string]string{
				TokensKey: strings.Join(v.Configured.Tokens, ","), SharedKeysKey: strings.Join(v.Configured.Shared, ","),
			}})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("POST", strings.TrimPrefix(v.URL, vectorBase), strings.NewReader(v.Body))
			for k, val := range v.Headers {
				r.Header.Set(k, val)
			}
			err = hook.Verify(r, []byte(v.Body), time.Now())
			shared := r.Header.Get(SettingsHeader) != ""
			switch {
			case v.Valid && err != nil:
				t.Fatalf("a request signed by %s is refused: %v", v.Library, err)
			case !v.Valid && !errors.Is(err, provider.ErrBadSignature):
				t.Fatalf("a request signed by %s with a wrong key: %v, want ErrBadSignature", v.Library, err)
			case !v.Valid && shared && (!strings.Contains(err.Error(), "SharedKey") || strings.Contains(err.Error(), "PUBLIC_URL")):
				t.Errorf("a SharedKey refusal reads %q: want it to name the SharedKey, not the URL", err)
			case !v.Valid && !shared && !strings.Contains(err.Error(), TokensKey):
				t.Errorf("an auth-token refusal reads %q: want it to name %s first", err, TokensKey)
			}
			if !v.Valid {
				return
			}
			events, err := hook.Parse(r, []byte(v.Body))
			if err != nil || len(events) != 1 || !strings.HasPrefix(events[0].ExternalID, "SMvector") {
				t.Errorf("Parse = %+v, %v; want one event of the vector's MessageSid", events, err)
			}
		})
	}
}

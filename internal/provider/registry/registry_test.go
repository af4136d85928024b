package registry_test

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"inboxd/internal/provider"
	"inboxd/internal/provider/providertest"
)

// TestParseSaysWhatIsWrong: every provider refuses a JSON body of the wrong shape as
// malformed (400), saying what the body is and what was wanted, in the sender's terms
// rather than the Go type it was read into.
func TestParseSaysWhatIsWrong(t *testing.T) {
	for _, p := range providertest.Endpoints(t, "http://inboxd.test", nil) {
		r := httptest.NewRequest("POST", "/webhooks/"+p.Name, nil)
		r.Header.Set("Content-Type", "application/json")
		_, err := p.Webhook.Parse(r, []byte(`[{"id":1}]`))
		if !errors.Is(err, provider.ErrMalformed) || !strings.Contains(err.Error(), "body must be a JSON object, got an array") || strings.Contains(err.Error(), "Go value") {
			t.Errorf("%s: Parse of an array = %v, want malformed, saying it is an array where an object is wanted", p.Name, err)
		}
	}
}

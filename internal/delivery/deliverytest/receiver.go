// Package deliverytest is a subscriber's endpoint for tests: it verifies each
// delivery's signature with the Standard Webhooks reference library (as a consumer
// would), records what it got, and answers what the test tells it to.
package deliverytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Received is one request the endpoint got.
type Received struct {
	ID             string // webhook-id: the change id
	Type           string
	ConversationID int64
	At             time.Time
	Status         int      // what the endpoint answered; 0 when the sender had hung up
	Verified       bool     // the signature checked out with the subscription's secret
	VerifiedBy     []string // every secret given (SetSecret) whose signature is in the request
	Traceparent    string
	Data           map[string]any // the change's object
}

// Receiver is the endpoint. Answer decides each request's response (nil: 204); it
// may block (a hanging endpoint) until the request's context ends.
type Receiver struct {
	*httptest.Server
	mu       sync.Mutex
	secrets  []string
	got      []Received
	answer   func(r *http.Request, id string, attempt int) (status int, header http.Header)
	attempts map[string]int
}

// New starts a receiver; the test's cleanup closes it.
func New(t testing.TB) *Receiver {
	rc := &Receiver{attempts: map[string]int{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

// SetSecret tells the receiver the subscription's secret (from its 201), and any
// other secrets to check each request's signatures against (VerifiedBy).
func (rc *Receiver) SetSecret(s string, others ...string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.secrets = append([]string{s}, others...)
}

// Answer sets how the receiver answers: status and headers for a change id's nth
// attempt (1-based, as this receiver counted them). It may block until r's context
// ends, to hang.
func (rc *Receiver) Answer(f func(r *http.Request, id string, attempt int) (int, http.Header)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answer = f
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	var change struct {
		ID             string         `json:"id"`
		Type           string         `json:"type"`
		ConversationID int64          `json:"conversation_id"`
		Data           map[string]any `json:"data"`
	}
	_ = json.Unmarshal(body, &change)
	rc.mu.Lock()
	rc.attempts[id]++
	attempt, answer, secrets := rc.attempts[id], rc.answer, rc.secrets
	rc.mu.Unlock()

	var by []string
	for _, s := range secrets {
		if wh, err := standardwebhooks.NewWebhook(s); err == nil && wh.Verify(body, r.Header) == nil && change.ID == id {
			by = append(by, s)
		}
	}
	verified := len(secrets) > 0 && len(by) > 0 && by[0] == secrets[0]
	status, header := http.StatusNoContent, http.Header(nil)
	if answer != nil {
		status, header = answer(r, id, attempt)
	}
	if r.Context().Err() != nil {
		status = 0 // the sender gave up (a hanging endpoint): nothing was answered
	}
	rc.mu.Lock()
	rc.got = append(rc.got, Received{ID: id, Type: change.Type, ConversationID: change.ConversationID, Data: change.Data, At: time.Now(),
		Status: status, Verified: verified, VerifiedBy: by, Traceparent: r.Header.Get("traceparent")})
	rc.mu.Unlock()
	if r.Context().Err() != nil {
		return // the sender gave up (a hanging endpoint)
	}
	for k, v := range header {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
}

// Got returns what the receiver got so far, in arrival order.
func (rc *Receiver) Got() []Received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Received(nil), rc.got...)
}

// Delivered returns the change ids answered 2xx, each once, in the order of their
// first 2xx.
func (rc *Receiver) Delivered() []Received {
	var out []Received
	seen := map[string]bool{}
	for _, g := range rc.Got() {
		if g.Status/100 == 2 && !seen[g.ID] {
			seen[g.ID] = true
			out = append(out, g)
		}
	}
	return out
}

// Command consumer is a complete receiver of inboxd's outbound webhooks
// (docs/consumers.md): it verifies each delivery with the Standard Webhooks reference
// library, ignores a change it has handled before (deliveries are at least once: the
// same webhook-id may come again), and answers 2xx only once the change is handled,
// so that inboxd retries anything it could not handle.
//
//	INBOXD_WEBHOOK_SECRET=whsec_… go run ./examples/consumer -addr :9000
//	inboxd subscriptions create --url https://your.host/inboxd --types message.created
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// change is what inboxd delivers: the same object as GET /v1/changes lists.
type change struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	ConversationID int64           `json:"conversation_id"`
	Data           json.RawMessage `json:"data"`
}

// handled remembers the change ids already handled. A real consumer keeps them in
// its own database, in the transaction that applies the change (a unique key on the
// id), so that a crash between the two cannot apply a change twice.
type handled struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (h *handled) once(id string, apply func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.ids[id] {
		apply()
		h.ids[id] = true
	}
}

func main() {
	addr := flag.String("addr", ":9000", "listen address")
	flag.Parse()
	h, err := newHandler(os.Getenv("INBOXD_WEBHOOK_SECRET"), func(c change) {
		// Your handler goes here. The log names the change only: its data holds
		// the contact's number and the message's text, which logs should not keep.
		log.Printf("%s %s conversation %d (%d bytes of data)", c.ID, c.Type, c.ConversationID, len(c.Data))
	})
	if err != nil {
		log.Fatalf("INBOXD_WEBHOOK_SECRET must be the subscription's whsec_ secret: %v", err)
	}
	log.Printf("listening on %s", *addr)
	// A server facing the internet bounds how long a client may take to send its
	// request, so that slow or idle connections cannot pile up.
	srv := &http.Server{Addr: *addr, Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Fatal(srv.ListenAndServe())
}

// newHandler serves POST /inboxd: apply is called once per change.
func newHandler(secret string, apply func(change)) (http.Handler, error) {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return nil, err
	}
	seen := &handled{ids: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /inboxd", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		// Checks webhook-signature over webhook-id, webhook-timestamp and the body,
		// and that the timestamp is recent (a replayed request is refused).
		if err := wh.Verify(body, r.Header); err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var c change
		if err := json.Unmarshal(body, &c); err != nil || c.ID != r.Header.Get("webhook-id") {
			http.Error(w, "not a change", http.StatusBadRequest)
			return
		}
		// Changes of one conversation arrive in order: the next is sent only after
		// this one is answered 2xx.
		seen.once(c.ID, func() { apply(c) })
		w.WriteHeader(http.StatusNoContent)
	})
	return mux, nil
}

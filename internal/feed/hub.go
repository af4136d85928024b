package feed

import "sync"

// Hub tells waiting readers that changes were committed. Notify is wired to the
// LISTEN connection (the processor's listener, on Channel); a reader takes Next
// before it reads, so that a notification that arrives while it reads still wakes it.
type Hub struct {
	mu   sync.Mutex
	next chan struct{}
}

// NewHub returns a Hub.
func NewHub() *Hub { return &Hub{next: make(chan struct{})} }

// Next returns a channel closed at the next Notify.
func (h *Hub) Next() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.next
}

// Notify wakes every reader waiting on Next.
func (h *Hub) Notify() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.next)
	h.next = make(chan struct{})
}

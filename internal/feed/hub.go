package feed

import (
	"sync"
	"time"
)

// Hub tells waiting readers that changes were committed. Notify is wired to the
// LISTEN connection (the processor's listener, on Channel); a reader takes Next
// before it reads, so that a notification that arrives while it reads still wakes it.
type Hub struct {
	mu   sync.Mutex
	next chan struct{}
	// recheck bounds how long a reader waits without a notification before it reads
	// again: a change that became readable without one (a notification lost with a
	// connection, a transaction that held the watermark back ending) waits at most
	// this long to be seen.
	recheck time.Duration
}

// NewHub returns a Hub.
func NewHub() *Hub { return &Hub{next: make(chan struct{}), recheck: time.Second} }

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

package delivery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"inboxd/internal/feed"
)

// PingType is the type of a ping's change: not a change of the feed, it changes
// nothing; an endpoint acknowledges it and ignores it.
const PingType = "ping"

// PingTimeout bounds a ping's wait for the endpoint (less than INBOX_DELIVERY_TIMEOUT
// when that is longer): the caller waits on an API request, which has 10 s.
const PingTimeout = 9 * time.Second

// Ping is what a ping got: the endpoint's answer to one request signed as a
// delivery is.
type Ping struct {
	WebhookID  string  `json:"webhook_id"`
	Delivered  bool    `json:"delivered"` // the endpoint answered 2xx
	Status     *int    `json:"status"`    // null when it did not answer
	Error      *string `json:"error"`     // why it was not delivered
	DurationMS float64 `json:"duration_ms"`
}

// pingTarget reads what a ping needs of a subscription.
const pingTarget = `SELECT url, secret, ` + previousSecret + ` FROM subscriptions WHERE id = $1`

// Ping sends a subscription's endpoint one request as a delivery would send it
// (the same signatures, headers and guard against private addresses), with a
// change of type ping and a webhook-id of its own, and returns the endpoint's
// answer. It records nothing: the breaker, the deliveries and the position are
// left as they are, and a paused subscription is pinged as well. It is how the
// owner of a new endpoint checks that it verifies signatures and answers 2xx.
func (d *Deliverer) Ping(ctx context.Context, id int64) (Ping, error) {
	var url, secret string
	var previous *string
	err := d.pool.QueryRow(ctx, pingTarget, id).Scan(&url, &secret, &previous)
	if errors.Is(err, pgx.ErrNoRows) {
		return Ping{}, fmt.Errorf("subscription %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Ping{}, fmt.Errorf("subscription %d: %w", id, err)
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	p := Ping{WebhookID: "ping_" + hex.EncodeToString(b)}
	body, err := json.Marshal(feed.Change{ID: p.WebhookID, Type: PingType, OccurredAt: time.Now().UTC(), Data: json.RawMessage(`{}`)})
	if err != nil {
		return Ping{}, err
	}
	start := time.Now()
	r := d.post(ctx, url, secret, previous, p.WebhookID, body, min(d.cfg.Timeout, PingTimeout))
	p.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	p.Delivered = r.err == ""
	if r.status != 0 {
		p.Status = &r.status
	}
	if r.err != "" {
		p.Error = &r.err
	}
	return p, nil
}

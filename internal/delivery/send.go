package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"inboxd/internal/feed"
	"inboxd/internal/processor"
	"inboxd/internal/provider/generic"
	"inboxd/internal/tracing"
)

// claimed is a delivery this process holds a lease on, with what sending it needs.
type claimed struct {
	ID             int64
	Subscription   int64
	XID            int64
	Seq            int64
	ConversationID int64
	Attempts       int // including the one now under way
	URL            string
	Secret         string
	PreviousSecret *string // a rotated-out secret still signing (RotateSecret)
	Type           string
	OccurredAt     time.Time
	Data           []byte
	Traceparent    *string
}

// claimDue leases up to $1 due pending deliveries: per active subscription whose
// breaker is closed (or whose open period has passed), as many as it has room for
// ($4 in flight across processes, or 1, a probe, while its failures are at the
// breaker's threshold $5), oldest first, subscriptions in random order so that none
// is always served first. The attempt is counted in the claim's commit, and run_at
// becomes the lease's end, which the sweep's rescue looks for.
const claimDue = `
WITH subs AS (
    SELECT s.id,
           CASE WHEN s.failures >= $5 THEN 1 ELSE $4 END
             - (SELECT count(*) FROM deliveries f
                WHERE f.subscription_id = s.id AND f.state = 'delivering' AND f.run_at > now()) AS room
    FROM subscriptions s
    WHERE s.state = 'active' AND (s.blocked_until IS NULL OR s.blocked_until <= now())
    ORDER BY random()
),
due AS MATERIALIZED (
    SELECT p.id
    FROM subs, LATERAL (
        SELECT d.id FROM deliveries d
        WHERE d.subscription_id = subs.id AND d.state = 'pending' AND d.run_at <= now()
        ORDER BY d.run_at
        LIMIT greatest(subs.room, 0)
        FOR UPDATE SKIP LOCKED
    ) p
    LIMIT $1
)
UPDATE deliveries d
SET state = 'delivering', attempts = d.attempts + 1,
    run_at = now() + $2 * interval '1 millisecond', locked_by = $3
FROM due, subscriptions s, changes c
WHERE d.id = due.id AND s.id = d.subscription_id AND c.xid = d.change_xid AND c.seq = d.change_seq
RETURNING d.id, d.subscription_id, d.change_xid::text::bigint, d.change_seq, d.conversation_id, d.attempts,
          s.url, s.secret, ` + previousSecret + `, c.type, c.occurred_at, ` + feed.Object + `, c.traceparent`

func (d *Deliverer) claim(ctx context.Context, limit int) ([]claimed, error) {
	b := d.batch()
	var out []claimed
	b.Queue(claimDue, limit, d.cfg.lease().Milliseconds(), d.cfg.ID, d.cfg.PerSubscription, breakerAfter).Query(func(rows pgx.Rows) error {
		var err error
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[claimed])
		return err
	})
	if err := d.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("claim deliveries: %w", err)
	}
	return out, nil
}

// result is what one attempt got.
type result struct {
	status     int           // the response's status; 0 when there was none
	err        string        // why it failed; empty when delivered
	retry      bool          // worth another attempt
	retryAfter time.Duration // the endpoint's Retry-After, if it sent one
}

// responseCap is how much of a response body is read: a snippet for last_error, and
// enough to let the connection be reused for a short answer. The rest is not read.
const responseCap = 4 << 10

// deliver sends one claimed delivery and hands its outcome to the finisher.
func (d *Deliverer) deliver(ctx context.Context, c claimed) {
	ctx, span := d.startSpan(ctx, c)
	r := d.send(ctx, c)
	d.endSpan(span, r)
	d.results <- attempt{c, r}
}

// signed gives the Standard Webhooks headers of a delivery: signed with the
// subscription's secret and, while a rotation keeps it, with the secret that one
// replaced, both in webhook-signature (a verifier accepts either).
func signed(secret string, previous *string, id string, body []byte) (http.Header, error) {
	now := time.Now()
	h, err := generic.Headers(secret, id, now, body)
	if err != nil || previous == nil {
		return h, err
	}
	old, err := generic.Signature(*previous, id, now.Unix(), body)
	if err != nil {
		return nil, err
	}
	h.Set("webhook-signature", h.Get("webhook-signature")+" "+old)
	return h, nil
}

// send makes the attempt: the change as the feed serves it, signed with the
// subscription's secret (Standard Webhooks; webhook-id is the change id, the same on
// every attempt).
func (d *Deliverer) send(ctx context.Context, c claimed) result {
	change, err := feed.NewChange(feed.Cursor{XID: uint64(c.XID), Seq: c.Seq}, c.Type, c.OccurredAt, c.ConversationID, c.Data)
	if err != nil {
		return result{err: err.Error()}
	}
	body, err := json.Marshal(change)
	if err != nil {
		return result{err: err.Error()}
	}
	return d.post(ctx, c.URL, c.Secret, c.PreviousSecret, change.ID, body, d.cfg.Timeout)
}

// post signs body (signed) and POSTs it to url, waiting at most timeout.
func (d *Deliverer) post(ctx context.Context, url, secret string, previous *string, id string, body []byte, timeout time.Duration) result {
	headers, err := signed(secret, previous, id, body)
	if err != nil {
		return result{err: "the subscription's secret cannot sign: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return result{err: "bad url: " + err.Error()}
	}
	req.Header = headers
	req.Header.Set("User-Agent", "inboxd")
	tracing.Propagator.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := d.client.Do(req)
	if err != nil {
		return transportFailure(err, timeout)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, responseCap))
	return classify(resp.StatusCode, resp.Header.Get("Retry-After"), snippet, time.Now())
}

// transportFailure: no response. A refused address is final; a timeout or a network
// error is worth another try.
func transportFailure(err error, timeout time.Duration) result {
	if errors.Is(err, ErrRefused) {
		return result{err: err.Error()}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return result{err: fmt.Sprintf("no answer within %s (INBOX_DELIVERY_TIMEOUT)", timeout), retry: true}
	}
	return result{err: err.Error(), retry: true}
}

// classify reads a response: 2xx is delivered; 408, 429 and 5xx are retried (after
// Retry-After when the endpoint sent one); anything else will not change by sending
// it again (a 3xx is not followed: see newClient), so it is dead at once, to be
// replayed when the endpoint is fixed.
func classify(status int, retryAfter string, body []byte, now time.Time) result {
	if status >= 200 && status < 300 {
		return result{status: status}
	}
	r := result{status: status, err: fmt.Sprintf("answered %d %s", status, http.StatusText(status))}
	if s := strings.TrimSpace(strings.ToValidUTF8(string(body), "")); s != "" {
		r.err += ": " + truncate(s, 200)
	}
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		r.retry = true
		r.retryAfter = parseRetryAfter(retryAfter, now)
	case status >= 300 && status < 400:
		r.err += " (redirects are not followed: subscribe the final URL)"
	}
	return r
}

// parseRetryAfter reads Retry-After: seconds, or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		// Past the cap the value no longer matters, and more seconds than a Duration
		// holds would wrap around to a negative one.
		return time.Duration(min(s, int(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// maxRetryAfter caps what an endpoint's Retry-After can ask for: past it, the
// delivery is retried anyway (and gives up at the give-up time).
const maxRetryAfter = time.Hour

// delay is how long to wait before the next attempt.
func (r result) delay(attempts int) time.Duration {
	return max(processor.Backoff(attempts), min(r.retryAfter, maxRetryAfter))
}

// ---- tracing ----

// startSpan starts the span of one attempt, linked to the trace of the webhook whose
// event made the change (ingest → process → deliver), and propagated to the endpoint
// in traceparent.
func (d *Deliverer) startSpan(ctx context.Context, c claimed) (context.Context, trace.Span) {
	ctx, span := d.tracer.Start(ctx, "deliver changes", trace.WithSpanKind(trace.SpanKindProducer))
	if !span.IsRecording() {
		return ctx, span
	}
	tp := ""
	if c.Traceparent != nil {
		tp = *c.Traceparent
	}
	if link, ok := tracing.Link(tp); ok {
		span.AddLink(link)
	}
	span.SetAttributes(semconv.MessagingSystemKey.String("inboxd"), semconv.MessagingDestinationName("changes"),
		semconv.MessagingOperationTypeSend, semconv.MessagingMessageID(feed.Cursor{XID: uint64(c.XID), Seq: c.Seq}.String()),
		attribute.Int64("inboxd.subscription.id", c.Subscription), attribute.Int64("inboxd.delivery.id", c.ID),
		tracing.AttemptKey.Int(c.Attempts))
	return ctx, span
}

func (d *Deliverer) endSpan(span trace.Span, r result) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	if r.status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(r.status))
	}
	if r.err != "" {
		span.SetStatus(codes.Error, truncate(r.err, 300))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

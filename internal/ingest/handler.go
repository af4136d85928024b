// Package ingest receives provider webhooks and stores each event durably in
// inbound_events before it acknowledges (docs/webhooks.md).
//
// Tables: ingest inserts into inbound_events and reads it only to find the ids of
// redelivered events. Everything after the insert is the processor's job; the insert
// trigger (migrations/001) and Writer's onCommit hook tell it there is work.
//
// Every provider goes through one pipeline (accept): cheap checks on the headers,
// a slot among the requests in flight, the body read under a deadline, the signature
// checked over the raw bytes, parsing into Events, one durable write under a
// deadline, and an answer. A provider is a small table of functions (provider), not a
// type hierarchy: adding one is a new file plus a line in the router.
package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/tracing"
)

// Defaults of the request limits (INBOX_READ_TIMEOUT, INBOX_MAX_INFLIGHT).
const (
	// DefaultReadTimeout bounds how long a client may take to send a request's
	// headers, and again its body. Providers send both at once; only a broken or
	// hostile client needs longer.
	DefaultReadTimeout = 10 * time.Second
	// DefaultMaxInFlight webhook requests are handled at once. In normal operation a
	// few dozen are; the cap keeps a stalled database or a flood from holding
	// unbounded memory and goroutines, and sheds load with 503s that providers retry.
	DefaultMaxInFlight = 1024
)

// Limits on what one request may carry.
const (
	// maxExternalIDBytes bounds an external id (webhook-id, MessageSid, a Meta
	// message id): real ones are under 100 bytes, and a key over ~2,700 bytes does not
	// fit the unique index at all.
	maxExternalIDBytes = 256
	// maxEventsPerRequest bounds the events of one POST (Meta batches): every event
	// is a row, and one request must not turn into an unbounded insert.
	maxEventsPerRequest = 1000
)

// retryAfter is the Retry-After of every 503: soon, since most stalls are short.
const retryAfter = "1"

// Config holds the providers' secrets and the request limits. Zero limits take the
// defaults.
type Config struct {
	MaxBodyBytes    int64
	ReadTimeout     time.Duration
	MaxInFlight     int
	PublicURL       string   // the base URL providers call; Twilio signs it
	GenericSecrets  [][]byte // decoded whsec_ keys; none disables /webhooks/generic
	TwilioTokens    []string // auth tokens (primary, secondary); none disables /webhooks/twilio
	MetaAppSecret   string   // with MetaVerifyToken, enables /webhooks/meta
	MetaVerifyToken string
	// Tracing makes the spans of stored webhooks (internal/tracing); nil: none.
	Tracing trace.TracerProvider
}

// Handlers serves the webhook endpoints.
type Handlers struct {
	cfg     Config
	writer  *Writer
	log     *zap.Logger
	noisy   *zap.Logger // rate-limited: lines an attacker or an outage could multiply
	metrics *metrics
	slots   chan struct{} // a token per webhook request in flight
	tracer  trace.Tracer
	now     func() time.Time
}

// NewHandlers returns the webhook handlers, storing through w.
func NewHandlers(cfg Config, w *Writer, log *zap.Logger) *Handlers {
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Tracing == nil {
		cfg.Tracing = noop.NewTracerProvider()
	}
	return &Handlers{
		tracer: cfg.Tracing.Tracer("inboxd/ingest"),
		cfg:    cfg, writer: w, log: log, metrics: w.metrics, now: time.Now,
		slots: make(chan struct{}, cfg.MaxInFlight),
		// At most 20 lines a second of each message and level; the rest are counted
		// in inbox_log_lines_dropped_total (and every request in
		// inbox_ingest_requests_total).
		noisy: log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
			return zapcore.NewSamplerWithOptions(c, time.Second, 20, 0, zapcore.SamplerHook(
				func(_ zapcore.Entry, d zapcore.SamplingDecision) {
					if d&zapcore.LogDropped != 0 {
						w.metrics.logDropped.Inc()
					}
				}))
		})),
	}
}

// Enabled lists the providers whose secrets are configured.
func (h *Handlers) Enabled() []string {
	var names []string
	if len(h.cfg.GenericSecrets) > 0 {
		names = append(names, "generic")
	}
	if len(h.cfg.TwilioTokens) > 0 {
		names = append(names, "twilio")
	}
	if h.metaEnabled() {
		names = append(names, "meta")
	}
	return names
}

// Ready reports why webhooks cannot be stored right now (for /readyz), or nil.
func (h *Handlers) Ready() error { return h.writer.Ready() }

// provider is what differs between webhook senders.
type provider struct {
	name      string
	mediaType string // the one content type accepted
	enabled   bool
	envHint   string // the variable that enables it, for the 404 message
	// headers checks what the headers alone can tell (signature headers present,
	// header ids within limits) before the body is read.
	headers func(r *http.Request) error
	verify  func(r *http.Request, body []byte) error
	parse   func(r *http.Request, body []byte) ([]Event, error)
	ok      func(w http.ResponseWriter, results []Result)
}

var (
	errMalformed     = errors.New("malformed payload")
	errTooLarge      = errors.New("body too large")
	errContentType   = errors.New("unsupported content type")
	errReadTimeout   = errors.New("body not received in time")
	errBusy          = errors.New("too many webhook requests in flight")
	errNotConfigured = errors.New("not configured")
)

// handle is the pipeline every webhook POST goes through.
func (h *Handlers) handle(p provider) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		results, err := h.accept(w, r, p)
		if err != nil {
			h.reject(w, r, p.name, err)
			return
		}
		h.metrics.requests.WithLabelValues(p.name, "200").Inc()
		h.metrics.ackLatency.WithLabelValues(p.name).Observe(time.Since(start).Seconds())
		ids := make([]int64, len(results))
		for i, res := range results {
			h.metrics.events.WithLabelValues(p.name, resultLabel(res)).Inc()
			ids[i] = res.ID
		}
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() { // the HTTP server span
			span.SetAttributes(tracing.ProviderKey.String(p.name), tracing.EventIDsKey.Int64Slice(ids),
				tracing.RequestIDKey.String(middleware.GetReqID(r.Context())))
		}
		h.log.Debug("webhook stored", zap.String("provider", p.name), zap.Int64s("event_ids", ids),
			zap.String("request_id", middleware.GetReqID(r.Context())))
		p.ok(w, results)
	}
}

// accept runs the pipeline up to the commit.
//
// Every read of the body is bounded by ReadTimeout from the start of the handler: a
// client that stalls or trickles its body is cut off (408) instead of holding a
// goroutine, a slot and a buffer for ever. A request refused before its body is read
// is answered at once and its connection closed; its read deadline is moved to now,
// so the server does not wait for the unread body either (it would try to drain it
// to reuse the connection). Once the body is in, the deadline is lifted: waiting for
// the commit is bounded by the ingest timeout alone.
func (h *Handlers) accept(w http.ResponseWriter, r *http.Request, p provider) ([]Result, error) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(h.now().Add(h.cfg.ReadTimeout)) // fails only on test recorders
	release, err := h.admit(r, p)
	if err == nil {
		defer release()
		var body []byte
		if body, err = h.readBody(w, r); err == nil {
			_ = rc.SetReadDeadline(time.Time{})
			return h.store(r, p, body)
		}
	}
	w.Header().Set("Connection", "close")
	_ = rc.SetReadDeadline(time.Now())
	return nil, err
}

// store verifies, parses and commits a webhook's body.
func (h *Handlers) store(r *http.Request, p provider, body []byte) ([]Result, error) {
	if err := p.verify(r, body); err != nil {
		return nil, err
	}
	events, err := p.parse(r, body)
	if err != nil {
		return nil, err
	}
	if len(events) > maxEventsPerRequest {
		return nil, fmt.Errorf("%w: the request carries %d events; at most %d are accepted per request",
			errMalformed, len(events), maxEventsPerRequest)
	}
	ctx, span := h.tracer.Start(r.Context(), "send inbound_events", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	headers := storable(keptHeaders(r.Header))
	requestID, traceparent := middleware.GetReqID(ctx), tracing.Traceparent(ctx)
	for i := range events {
		events[i].Provider = p.name
		events[i].Payload = storable(events[i].Payload)
		events[i].Headers = headers
		events[i].RequestID = requestID
		events[i].Traceparent = traceparent
	}
	results, err := h.writer.Write(ctx, events)
	if span.IsRecording() {
		traceSend(span, p.name, results, err)
	}
	return results, err
}

// traceSend describes a commit on its span (messaging conventions: a "send" to
// inbound_events, the message ids being the event ids).
func traceSend(span trace.Span, provider string, results []Result, err error) {
	span.SetAttributes(tracing.Queue...)
	span.SetAttributes(semconv.MessagingOperationTypeSend, semconv.MessagingOperationName("send"),
		tracing.ProviderKey.String(provider), semconv.MessagingBatchMessageCount(len(results)))
	ids := make([]int64, len(results))
	for i, r := range results {
		ids[i] = r.ID
	}
	span.SetAttributes(tracing.EventIDsKey.Int64Slice(ids))
	if len(ids) == 1 {
		span.SetAttributes(semconv.MessagingMessageID(strconv.FormatInt(ids[0], 10)))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}

// admit checks what the headers alone tell (provider enabled, content type, announced
// length, signature headers) and takes a slot among the requests in flight; release
// gives it back.
func (h *Handlers) admit(r *http.Request, p provider) (release func(), err error) {
	if !p.enabled {
		return nil, fmt.Errorf("the %s webhook is %w: set %s to enable it", p.name, errNotConfigured, p.envHint)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != p.mediaType {
		return nil, fmt.Errorf("%w: got %q, want %s", errContentType, r.Header.Get("Content-Type"), p.mediaType)
	}
	if r.ContentLength > h.cfg.MaxBodyBytes {
		return nil, h.tooLarge()
	}
	if err := p.headers(r); err != nil {
		return nil, err
	}
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	default:
		return nil, fmt.Errorf("%w: %d at once is the limit (INBOX_MAX_INFLIGHT); retry shortly", errBusy, cap(h.slots))
	}
}

// readBody reads the body under the deadline accept set, at most MaxBodyBytes.
func (h *Handlers) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	var timeout interface{ Timeout() bool }
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge):
		return nil, h.tooLarge()
	case errors.As(err, &timeout) && timeout.Timeout():
		return nil, fmt.Errorf("%w: the body did not arrive within %s (INBOX_READ_TIMEOUT)", errReadTimeout, h.cfg.ReadTimeout)
	default:
		return nil, fmt.Errorf("%w while sending the body: %v", errClientGone, err)
	}
}

func (h *Handlers) tooLarge() error {
	return fmt.Errorf("%w: limit is %d bytes (INBOX_MAX_BODY_BYTES)", errTooLarge, h.cfg.MaxBodyBytes)
}

// reject answers an error from accept with its status (docs/webhooks.md) and logs it
// once, rate-limited, with the reason and the request id.
func (h *Handlers) reject(w http.ResponseWriter, r *http.Request, name string, err error) {
	switch {
	case errors.Is(err, errNotConfigured):
		h.fail(w, r, name, http.StatusNotFound, "provider_not_configured", err)
	case errors.Is(err, errContentType):
		h.fail(w, r, name, http.StatusUnsupportedMediaType, "unsupported_media_type", err)
	case errors.Is(err, errTooLarge):
		h.fail(w, r, name, http.StatusRequestEntityTooLarge, "body_too_large", err)
	case errors.Is(err, errNoSignature), errors.Is(err, errBadSignature), errors.Is(err, errStale):
		h.fail(w, r, name, http.StatusUnauthorized, "invalid_signature", err)
	case errors.Is(err, errMalformed), errors.Is(err, errUnstorable):
		h.fail(w, r, name, http.StatusBadRequest, "malformed_payload", err)
	case errors.Is(err, errReadTimeout):
		h.fail(w, r, name, http.StatusRequestTimeout, "request_timeout", err)
	case errors.Is(err, errClientGone):
		// Nothing was acknowledged and nobody is listening; counted as nginx counts
		// it (499), so that a client's hang-up never looks like a database outage.
		h.fail(w, r, name, 499, "client_closed_request", err)
	case errors.Is(err, errBusy):
		w.Header().Set("Retry-After", retryAfter)
		h.fail(w, r, name, http.StatusServiceUnavailable, "overloaded", err)
	default:
		w.Header().Set("Retry-After", retryAfter)
		h.fail(w, r, name, http.StatusServiceUnavailable, "database_unavailable",
			fmt.Errorf("the event could not be stored (%w); nothing was acknowledged, retry later", err))
	}
}

// fail counts, logs and sends an error answer.
func (h *Handlers) fail(w http.ResponseWriter, r *http.Request, name string, status int, code string, err error) {
	h.metrics.requests.WithLabelValues(name, strconv.Itoa(status)).Inc()
	level := zap.InfoLevel
	if status >= 500 {
		level = zap.WarnLevel
	}
	if ce := h.noisy.Check(level, "webhook rejected"); ce != nil {
		ce.Write(zap.String("provider", name), zap.Int("status", status), zap.String("code", code),
			zap.String("reason", err.Error()), zap.String("request_id", middleware.GetReqID(r.Context())))
	}
	jsonhttp.Error(w, status, code, err.Error())
}

func resultLabel(r Result) string {
	if r.Duplicate {
		return "duplicate"
	}
	return "new"
}

// allowedHeaders are the request headers worth keeping with an event. Signatures and
// credentials are never stored.
var allowedHeaders = []string{
	"Content-Type", "User-Agent", "Webhook-Id", "Webhook-Timestamp",
	"I-Twilio-Idempotency-Token", "X-Home-Region",
}

func keptHeaders(h http.Header) []byte {
	kept := map[string]string{}
	for _, name := range allowedHeaders {
		if v := h.Get(name); v != "" {
			kept[name] = v
		}
	}
	b, _ := json.Marshal(kept) // a map of strings always marshals
	return b
}

// jsonOK is the 200 answer of the JSON providers.
func jsonOK(w http.ResponseWriter, results []Result) {
	jsonhttp.Write(w, http.StatusOK, map[string][]Result{"events": results})
}

// checkID refuses an external id that is empty or longer than maxExternalIDBytes,
// naming the field it came from.
func checkID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s is required", errMalformed, field)
	case len(id) > maxExternalIDBytes:
		return fmt.Errorf("%w: %s is %d bytes; the limit is %d", errMalformed, field, len(id), maxExternalIDBytes)
	}
	return nil
}

func (h *Handlers) metaEnabled() bool {
	return h.cfg.MetaAppSecret != "" && h.cfg.MetaVerifyToken != ""
}

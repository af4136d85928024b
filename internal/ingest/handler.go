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
// deadline, and an answer. What differs between providers (headers, signature,
// parsing, the answer) comes from each provider's package through provider.Webhook;
// ingest knows none by name (docs/architecture.md).
package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/semaphore"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/provider"
	"inboxd/internal/redact"
	"inboxd/internal/tracing"
)

// Defaults of the request limits (docs/configuration.md).
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

// maxEventsPerRequest bounds the events of one POST (Meta batches): every event is a
// row, and one request must not turn into an unbounded insert.
const maxEventsPerRequest = 1000

// retryAfter is the Retry-After of every 503: soon, since most stalls are short.
const retryAfter = "1"

// DefaultMaxBodyBytes is the default of the largest body accepted: Meta sends up to
// 3 MB. A provider may set a smaller limit of its own (provider.Webhook.MaxBodyBytes).
const DefaultMaxBodyBytes = 4 << 20

// DefaultBodyMemory is the default of the bytes of webhook bodies being received at
// once, all requests together. Bodies are buffered before their signatures can be
// checked, so this is what anyone can make a process hold: a request announcing a
// body reserves its length (or its provider's limit when it does not say), and one
// that finds no room left is answered 503 at once.
const DefaultBodyMemory = 64 << 20

// Config holds the providers' endpoints and the request limits. Zero limits take the
// defaults.
type Config struct {
	// Endpoints are the providers as configured (registry.Open); one without a
	// webhook answers 404 with its hint.
	Endpoints    []provider.Endpoint
	MaxBodyBytes int64
	BodyMemory   int64 // bytes of bodies received at once, all requests together
	ReadTimeout  time.Duration
	MaxInFlight  int
	// Tracing makes the spans of stored webhooks (internal/tracing); nil: none.
	Tracing trace.TracerProvider
	// SettingName names a setting in answers ("MAX_BODY_BYTES" → the service's
	// variable for it); nil: the key.
	SettingName func(key string) string
	// Redaction rewrites each event's payload before it is stored; nil: none.
	Redaction *redact.Policy
}

// name is the name of the setting key, for messages.
func (c Config) name(key string) string {
	if c.SettingName == nil {
		return key
	}
	return c.SettingName(key)
}

// Handlers serves the webhook endpoints.
type Handlers struct {
	cfg     Config
	writer  *Writer
	log     *zap.Logger
	noisy   *zap.Logger // rate-limited: lines an attacker or an outage could multiply
	metrics *metrics
	slots   chan struct{}       // a token per webhook request in flight
	bodies  *semaphore.Weighted // bytes of bodies being received or held
	tracer  trace.Tracer
	now     func() time.Time
}

// NewHandlers returns the webhook handlers, storing through w.
func NewHandlers(cfg Config, w *Writer, log *zap.Logger) *Handlers {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BodyMemory <= 0 {
		cfg.BodyMemory = DefaultBodyMemory
	}
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
		slots:  make(chan struct{}, cfg.MaxInFlight),
		bodies: semaphore.NewWeighted(cfg.BodyMemory),
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
	for _, e := range h.cfg.Endpoints {
		if e.Webhook != nil {
			names = append(names, e.Name)
		}
	}
	return names
}

// Route is one provider's webhook path and handlers.
type Route struct {
	Provider  string
	Path      string           // /webhooks/<provider>
	Post      http.HandlerFunc // the webhook
	Handshake http.HandlerFunc // GET on the same path, or nil
}

// Routes returns every provider's routes, configured or not (one that is not
// answers 404 saying how to enable it).
func (h *Handlers) Routes() []Route {
	routes := make([]Route, len(h.cfg.Endpoints))
	for i, e := range h.cfg.Endpoints {
		routes[i] = Route{Provider: e.Name, Path: "/webhooks/" + e.Name, Post: h.handle(e)}
		switch {
		case e.Webhook == nil:
			routes[i].Handshake = func(w http.ResponseWriter, r *http.Request) { h.reject(w, r, e.Name, notConfigured(e)) }
		case e.Webhook.Handshake != nil:
			routes[i].Handshake = e.Webhook.Handshake
		}
	}
	return routes
}

func notConfigured(e provider.Endpoint) error {
	return fmt.Errorf("the %s webhook is %w: %s to enable it", e.Name, errNotConfigured, e.Hint)
}

// Ready reports why webhooks cannot be stored right now (for /readyz), or nil.
func (h *Handlers) Ready() error { return h.writer.Ready() }

var (
	errTooLarge      = errors.New("body too large")
	errContentType   = errors.New("unsupported content type")
	errReadTimeout   = errors.New("body not received in time")
	errBusy          = errors.New("too many webhook requests in flight")
	errNotConfigured = errors.New("not configured")
)

// handle is the pipeline every webhook POST goes through.
func (h *Handlers) handle(e provider.Endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		results, err := h.accept(w, r, e)
		if err != nil {
			h.reject(w, r, e.Name, err)
			return
		}
		h.metrics.requests.WithLabelValues(e.Name, "200").Inc()
		h.metrics.ackLatency.WithLabelValues(e.Name).Observe(time.Since(start).Seconds())
		ids := make([]int64, len(results))
		for i, res := range results {
			h.metrics.events.WithLabelValues(e.Name, resultLabel(res)).Inc()
			ids[i] = res.ID
		}
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() { // the HTTP server span
			span.SetAttributes(tracing.ProviderKey.String(e.Name), tracing.EventIDsKey.Int64Slice(ids),
				tracing.RequestIDKey.String(middleware.GetReqID(r.Context())))
		}
		h.log.Debug("webhook stored", zap.String("provider", e.Name), zap.Int64s("event_ids", ids),
			zap.String("request_id", middleware.GetReqID(r.Context())))
		ack(w, e.Webhook, results)
	}
}

// ack sends the 200 answer: the provider's own, or the JSON list of stored events.
func ack(w http.ResponseWriter, hook *provider.Webhook, results []Result) {
	if hook.Ack == nil {
		jsonhttp.Write(w, http.StatusOK, map[string][]Result{"events": results})
		return
	}
	w.Header().Set("Content-Type", hook.AckType) // and nosniff, on every answer of the server
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(hook.Ack)
}

// accept runs the pipeline up to the commit.
//
// Every read of the body is bounded by ReadTimeout from the start of the handler: a
// client that stalls or trickles its body is cut off (408) instead of holding a
// goroutine, a slot and a buffer for ever. A request refused before its body is read
// is answered at once and its connection closed; its read deadline is moved to now,
// so the server does not wait for the unread body either (it would try to drain it
// to reuse the connection). Once the body is in, the deadline bounds nothing: the
// commit is bounded by the ingest timeout alone (net/http clears the deadline before
// it reads the connection in the background, and again before the next request).
func (h *Handlers) accept(w http.ResponseWriter, r *http.Request, e provider.Endpoint) ([]Result, error) {
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(h.now().Add(h.cfg.ReadTimeout)) // fails only on test recorders
	release, err := h.admit(r, e)
	if err == nil {
		defer release()
		var body []byte
		if body, err = h.readBody(w, r, h.bodyLimit(e)); err == nil {
			return h.store(r, e, body)
		}
	}
	w.Header().Set("Connection", "close")
	_ = rc.SetReadDeadline(time.Now())
	return nil, err
}

// store verifies, parses and commits a webhook's body.
func (h *Handlers) store(r *http.Request, e provider.Endpoint, body []byte) ([]Result, error) {
	if err := e.Webhook.Verify(r, body, h.now()); err != nil {
		return nil, err
	}
	parsed, err := e.Webhook.Parse(r, body)
	if err != nil {
		return nil, err
	}
	if len(parsed) > maxEventsPerRequest {
		return nil, fmt.Errorf("%w: the request carries %d events; at most %d are accepted per request",
			provider.ErrMalformed, len(parsed), maxEventsPerRequest)
	}
	ctx, span := h.tracer.Start(r.Context(), "send inbound_events", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	headers := storable(keptHeaders(r.Header, e.Webhook.KeepHeaders))
	requestID, traceparent := middleware.GetReqID(ctx), tracing.Traceparent(ctx)
	events := make([]Event, len(parsed))
	for i, pe := range parsed {
		stored := provider.Stored(e.Name, pe.Sender)
		events[i] = Event{
			Provider: stored, ExternalID: pe.ExternalID, Payload: storable(h.redact(e.Name, pe.Payload)),
			Headers: headers, RequestID: requestID, Traceparent: traceparent, Lane: provider.Lane(stored, pe.Channel),
		}
	}
	results, err := h.writer.Write(ctx, events)
	if span.IsRecording() {
		traceSend(span, e.Name, results, err)
	}
	return results, err
}

// redact applies the redaction policy to a payload: after the signature was checked
// over the raw bytes and the events parsed (their ids are taken), before anything is
// written, so the redacted value is the only one stored.
func (h *Handlers) redact(provider string, payload []byte) []byte {
	out, _ := h.cfg.Redaction.Apply(provider, payload)
	return out
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
func (h *Handlers) admit(r *http.Request, e provider.Endpoint) (release func(), err error) {
	if e.Webhook == nil {
		return nil, notConfigured(e)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || !slices.Contains(e.Webhook.MediaTypes, mt) {
		return nil, fmt.Errorf("%w: got %q, want %s", errContentType, truncate(r.Header.Get("Content-Type"), 100),
			strings.Join(e.Webhook.MediaTypes, " or "))
	}
	limit := h.bodyLimit(e)
	if r.ContentLength > limit {
		return nil, h.tooLarge(limit)
	}
	if err := e.Webhook.Headers(r.Header); err != nil {
		return nil, err
	}
	reserve := limit // a body of unannounced length may take the whole limit
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	if !h.bodies.TryAcquire(reserve) {
		return nil, fmt.Errorf("%w: webhook bodies being received take %d bytes at most (%s); retry shortly",
			errBusy, h.cfg.BodyMemory, h.cfg.name("BODY_MEMORY"))
	}
	select {
	case h.slots <- struct{}{}:
		h.metrics.inFlight.Inc()
		h.metrics.bodyBytes.Add(float64(reserve))
		return func() {
			h.metrics.bodyBytes.Sub(float64(reserve))
			h.metrics.inFlight.Dec()
			<-h.slots
			h.bodies.Release(reserve)
		}, nil
	default:
		h.bodies.Release(reserve)
		return nil, fmt.Errorf("%w: %d at once is the limit (%s); retry shortly", errBusy, cap(h.slots), h.cfg.name("MAX_INFLIGHT"))
	}
}

// bodyLimit is the largest body e accepts: its provider's limit, within the service's.
func (h *Handlers) bodyLimit(e provider.Endpoint) int64 {
	if l := e.Webhook.MaxBodyBytes; l > 0 && l < h.cfg.MaxBodyBytes {
		return l
	}
	return h.cfg.MaxBodyBytes
}

// readBody reads the body under the deadline accept set, at most limit bytes. A body
// of announced length is read into a buffer of that length (io.ReadAll would grow
// its buffer to twice the body, past what admit reserved).
func (h *Handlers) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := readAll(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	var tooLarge *http.MaxBytesError
	var timeout interface{ Timeout() bool }
	switch {
	case err == nil:
		return body, nil
	case errors.As(err, &tooLarge):
		return nil, h.tooLarge(limit)
	case errors.As(err, &timeout) && timeout.Timeout():
		return nil, fmt.Errorf("%w: the body did not arrive within %s (%s)", errReadTimeout, h.cfg.ReadTimeout, h.cfg.name("READ_TIMEOUT"))
	default:
		return nil, fmt.Errorf("%w while sending the body: %v", errClientGone, err)
	}
}

func (h *Handlers) tooLarge(limit int64) error {
	if limit < h.cfg.MaxBodyBytes {
		return fmt.Errorf("%w: this provider's limit is %d bytes", errTooLarge, limit)
	}
	return fmt.Errorf("%w: limit is %d bytes (%s)", errTooLarge, limit, h.cfg.name("MAX_BODY_BYTES"))
}

// readAll reads r to its end; with the length known (≥ 0), into a buffer of exactly
// that length.
func readAll(r io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(r)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("the body ended before its Content-Length: %w", err)
		}
		return nil, err
	}
	return body, nil
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
	case errors.Is(err, provider.ErrNoSignature), errors.Is(err, provider.ErrBadSignature), errors.Is(err, provider.ErrStale):
		h.fail(w, r, name, http.StatusUnauthorized, "invalid_signature", err)
	case errors.Is(err, provider.ErrMalformed), errors.Is(err, errUnstorable):
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
	// What a client sent can be in a reason (a content type, an id): bounded, in the log
	// and in the answer alike; what the request was checked against is logged only.
	reason := truncate(err.Error(), 512)
	if ce := h.noisy.Check(level, "webhook rejected"); ce != nil {
		fields := []zap.Field{zap.String("provider", name), zap.Int("status", status), zap.String("code", code),
			zap.String("reason", reason), zap.String("request_id", middleware.GetReqID(r.Context()))}
		if d := provider.LogDetail(err); d != "" {
			fields = append(fields, zap.String("detail", truncate(d, 512)))
		}
		ce.Write(fields...)
	}
	jsonhttp.Error(w, status, code, reason)
}

func resultLabel(r Result) string {
	if r.Duplicate {
		return "duplicate"
	}
	return "new"
}

// keptHeaders are the request headers stored with an event: Content-Type,
// User-Agent and the provider's own (ids, idempotency tokens). Signatures and
// credentials are never stored.
func keptHeaders(h http.Header, names []string) []byte {
	kept := map[string]string{}
	for _, name := range append([]string{"Content-Type", "User-Agent"}, names...) {
		if v := h.Get(name); v != "" {
			kept[http.CanonicalHeaderKey(name)] = truncate(v, 256)
		}
	}
	b, _ := json.Marshal(kept) // a map of strings always marshals
	return b
}

// truncate shortens what a client sent before it is stored or echoed.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

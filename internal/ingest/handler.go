// Package ingest receives provider webhooks and stores each event durably in
// inbound_events before it acknowledges (SPEC §3).
//
// Tables: ingest inserts into inbound_events and reads it only to find the ids of
// redelivered events. Everything after the insert is the processor's job; the insert
// trigger (migrations/001) and Writer's onCommit hook tell it there is work.
//
// Every provider goes through one pipeline (handle): size and content-type limits,
// signature check over the raw bytes, parsing into Events, one durable write, and an
// answer. A provider is a small table of functions (provider), not a type hierarchy:
// adding one is a new file plus a line in Handlers.
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

	"go.uber.org/zap"

	"inboxd/internal/jsonhttp"
)

// Config holds the providers' secrets and the request limits.
type Config struct {
	MaxBodyBytes    int64
	PublicURL       string   // the base URL providers call; Twilio signs it
	GenericSecrets  [][]byte // decoded whsec_ keys; none disables /webhooks/generic
	TwilioTokens    []string // auth tokens (primary, secondary); none disables /webhooks/twilio
	MetaAppSecret   string   // with MetaVerifyToken, enables /webhooks/meta
	MetaVerifyToken string
}

// Handlers serves the webhook endpoints.
type Handlers struct {
	cfg     Config
	writer  *Writer
	log     *zap.Logger
	metrics *metrics
	now     func() time.Time
}

// NewHandlers returns the webhook handlers, storing through w.
func NewHandlers(cfg Config, w *Writer, log *zap.Logger) *Handlers {
	return &Handlers{cfg: cfg, writer: w, log: log, metrics: w.metrics, now: time.Now}
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

// provider is what differs between webhook senders.
type provider struct {
	name      string
	mediaType string // the one content type accepted
	enabled   bool
	envHint   string // the variable that enables it, for the 404 message
	verify    func(r *http.Request, body []byte) error
	parse     func(r *http.Request, body []byte) ([]Event, error)
	ok        func(w http.ResponseWriter, results []Result)
}

var (
	errMalformed   = errors.New("malformed payload")
	errTooLarge    = errors.New("body too large")
	errContentType = errors.New("unsupported content type")
)

// handle is the pipeline every webhook POST goes through.
func (h *Handlers) handle(p provider) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !p.enabled {
			h.fail(w, p.name, http.StatusNotFound, "provider_not_configured",
				fmt.Sprintf("the %s webhook is not configured: set %s to enable it", p.name, p.envHint))
			return
		}
		results, err := h.accept(r, p)
		if err != nil {
			h.reject(w, r, p.name, err)
			return
		}
		h.metrics.requests.WithLabelValues(p.name, "200").Inc()
		for _, res := range results {
			h.metrics.events.WithLabelValues(p.name, resultLabel(res)).Inc()
		}
		p.ok(w, results)
	}
}

func (h *Handlers) accept(r *http.Request, p provider) ([]Result, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != p.mediaType {
		return nil, fmt.Errorf("%w: got %q, want %s", errContentType, r.Header.Get("Content-Type"), p.mediaType)
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, h.cfg.MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, fmt.Errorf("%w: limit is %d bytes (INBOX_MAX_BODY_BYTES)", errTooLarge, h.cfg.MaxBodyBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if err := p.verify(r, body); err != nil {
		return nil, err
	}
	events, err := p.parse(r, body)
	if err != nil {
		return nil, err
	}
	headers := keptHeaders(r.Header)
	for i := range events {
		events[i].Provider = p.name
		events[i].Headers = headers
	}
	return h.writer.Write(r.Context(), events)
}

// reject maps an error from accept to the status of SPEC §3.
func (h *Handlers) reject(w http.ResponseWriter, r *http.Request, name string, err error) {
	switch {
	case errors.Is(err, errContentType):
		h.fail(w, name, http.StatusUnsupportedMediaType, "unsupported_media_type", err.Error())
	case errors.Is(err, errTooLarge):
		h.fail(w, name, http.StatusRequestEntityTooLarge, "body_too_large", err.Error())
	case errors.Is(err, errNoSignature), errors.Is(err, errBadSignature), errors.Is(err, errStale):
		h.fail(w, name, http.StatusUnauthorized, "invalid_signature", err.Error())
	case errors.Is(err, errMalformed), errors.Is(err, errUnstorable):
		h.fail(w, name, http.StatusBadRequest, "malformed_payload", err.Error())
	default:
		// The database, or the client went away before the commit: either way nothing
		// is acknowledged, and the provider will retry.
		if r.Context().Err() == nil {
			h.log.Warn("webhook not stored", zap.String("provider", name), zap.Error(err))
		}
		w.Header().Set("Retry-After", "1")
		h.fail(w, name, http.StatusServiceUnavailable, "database_unavailable",
			"the event could not be stored; nothing was acknowledged, retry later")
	}
}

func (h *Handlers) fail(w http.ResponseWriter, name string, status int, code, msg string) {
	h.metrics.requests.WithLabelValues(name, strconv.Itoa(status)).Inc()
	jsonhttp.Error(w, status, code, msg)
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

func (h *Handlers) metaEnabled() bool {
	return h.cfg.MetaAppSecret != "" && h.cfg.MetaVerifyToken != ""
}

// Package api serves inboxd's HTTP surface: it mounts the webhook handlers of
// internal/ingest, and serves the read API (conversations, messages), the admin API
// (events, replay, stats), health checks, metrics and the OpenAPI document.
//
// Tables: it reads conversations, messages and inbound_events; the only write is
// replay, which puts finished events back to pending (the processor's table states,
// used the way the processor's own retries use them).
package api

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
	"inboxd/internal/ingest"
	"inboxd/internal/jsonhttp"
	"inboxd/internal/privacy"
	"inboxd/internal/redact"
)

// Deps is what the router needs.
type Deps struct {
	Pool        *pgxpool.Pool // the primary: admin endpoints, readiness
	ReadPool    *pgxpool.Pool // the /v1 reads (a replica's pool, or Pool); nil: Pool
	PollOnly    bool          // no LISTEN connection by design (poll-only mode)
	Webhooks    *ingest.Handlers
	Listening   func() bool // whether the processor's LISTEN connection is up
	Gatherer    prometheus.Gatherer
	APITokens   []string
	AdminTokens []string
	Log         *zap.Logger
	// Tracing, when set, gives each webhook request a server span (W3C trace context
	// from the provider's headers honoured); nil when tracing is off.
	Tracing trace.TracerProvider
	// TrustTraceparent makes a webhook's span the child of the trace context the
	// caller sent, instead of a new trace linked to it (see traced).
	TrustTraceparent bool
	// Misconfigured reports a misconfiguration the database's pools have seen (a
	// pooler losing prepared statements); nil: none is watched.
	Misconfigured func() error
	// Changes wakes the change feed's long polls and streams (fed by the LISTEN
	// connection); nil serves no feed.
	Changes *feed.Hub
	// Eraser runs erasures and checks addresses for exports (the privacy
	// endpoints); nil serves none of them.
	Eraser *privacy.Eraser
	// Redaction is the redaction policy in force, so that a contact search finds
	// addresses stored hashed; nil: none.
	Redaction *redact.Policy
	// Deliveries serves the subscription endpoints (internal/delivery) when set.
	Deliveries *Deliveries
	// Console is the operators' web console (internal/console), mounted at /console
	// with the admin endpoints; nil: none.
	Console http.Handler
	// Readiness is the shared readiness check (nil: the router makes its own).
	Readiness *Readiness
	// SettingName names a setting in answers ("API_TOKENS" → its variable); nil:
	// the key.
	SettingName func(key string) string
}

// Deliveries is what the subscription endpoints need besides the pool.
type Deliveries struct {
	AllowPrivate bool   // INBOX_DELIVERY_ALLOW_PRIVATE: subscriptions may name private addresses
	Wake         func() // this process's deliverer has work
	// Ping sends a subscription's endpoint a signed ping (delivery.Deliverer.Ping);
	// nil: POST …/ping is not served.
	Ping func(ctx context.Context, id int64) (delivery.Ping, error)
}

// name is the name of the setting key, for answers.
func (d Deps) name(key string) string {
	if d.SettingName == nil {
		return key
	}
	return d.SettingName(key)
}

// NewRouter returns the handler for every route (routes.go lists them).
func NewRouter(d Deps) http.Handler { return newRouter(d.defaults(), every) }

// NewRouters returns two handlers that share the routes between them: public, the
// webhooks and the /v1 reads (what providers and consumers reach); internal,
// readiness, metrics and the admin endpoints (what operators and Prometheus reach,
// served on a private address: INBOX_ADMIN_ADDR). Both answer /healthz and
// /openapi.yaml.
func NewRouters(d Deps) (public, internal http.Handler) {
	d = d.defaults()
	return newRouter(d, publicRoutes), newRouter(d, internalRoutes)
}

func (d Deps) defaults() Deps {
	if d.ReadPool == nil {
		d.ReadPool = d.Pool
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Readiness == nil {
		d.Readiness = NewReadiness(d)
	}
	return d
}

func newRouter(d Deps, which routeSet) http.Handler {
	r := chi.NewRouter()
	// GetHead answers HEAD wherever GET is served, as RFC 9110 asks of every server:
	// an uptime check or `curl -I` of /healthz gets the GET's headers, not a 405.
	r.Use(requestID, accessLog(d.Log), recoverer(d.Log), middleware.GetHead)
	routes(r, d, which)
	return r
}

// requestID gives every request an id (and every answer nosniff): the client's X-Request-Id when it is short and
// plain (a load balancer's id, so that the logs of both join up), else a new one. The
// id is sent back in X-Request-Id on every response, and goes on the request's log
// lines and on the events it stored (inbound_events.request_id), so that an operator
// can go from a provider's delivery log to the event. chi's context key carries it,
// so middleware.GetReqID reads it anywhere.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(middleware.RequestIDHeader)
		if !plainID(id) {
			id = fmt.Sprintf("%016x", rand.Uint64())
		}
		w.Header().Set(middleware.RequestIDHeader, id)
		// Every answer says what it is: no browser may guess a type (an echoed Meta
		// challenge, a text error) and run it.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), middleware.RequestIDKey, id)))
	})
}

// plainID: 1 to 64 letters, digits and . _ : - (what load balancers and tracing
// headers use). Anything else, a client's 20 KB "id" included, is replaced.
func plainID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// accessLog logs one line per request at debug level (webhooks run at thousands per
// second; errors are logged where they are handled) and every 5xx at warn.
func accessLog(log *zap.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			start := time.Now()
			next.ServeHTTP(ww, r)
			level := zap.DebugLevel
			if ww.Status() >= 500 {
				level = zap.WarnLevel
			}
			if ce := log.Check(level, "http request"); ce != nil {
				ce.Write(zap.String("method", r.Method), zap.String("route", route(r)),
					zap.Int("status", ww.Status()), zap.Duration("took", time.Since(start)),
					zap.String("request_id", middleware.GetReqID(r.Context())))
			}
		})
	}
}

// route is the pattern of the route r matched ("/v1/contacts/{address}/export"),
// or "(no route)": logs name the route, never the path, because a path may hold a
// contact's address.
func route(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return rc.RoutePattern()
	}
	return "(no route)"
}

// recoverer turns a handler panic into a logged 500 with the JSON error shape.
func recoverer(log *zap.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("handler panicked", zap.Any("panic", v), zap.String("route", route(r)),
						zap.String("request_id", middleware.GetReqID(r.Context())), zap.Stack("stack"))
					jsonhttp.Error(w, http.StatusInternalServerError, "internal", "internal error; the request id is in the logs")
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	jsonhttp.Write(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readiness answers /readyz and the inbox_ready gauge. The database is pinged at most
// once a second (the endpoint is open to anyone, and a flood of it must not become a
// flood of pings); the other parts are read from memory each time. Its answer is
// fixed words; the reasons behind them go to the log.
type Readiness struct {
	d        Deps
	mu       sync.Mutex
	pingedAt time.Time
	dbErr    error
}

// NewReadiness returns the readiness check of d.
func NewReadiness(d Deps) *Readiness { return &Readiness{d: d} }

// Check reports whether inboxd is ready (database reachable, webhooks being
// committed, LISTEN connected unless unused), and each part's state in fixed words.
func (r *Readiness) Check(ctx context.Context) (bool, map[string]string) {
	parts := map[string]string{"database": "ok", "ingest": "ok", "listener": "connected"}
	if err := r.ping(ctx); err != nil {
		parts["database"] = "unreachable"
	} else if r.d.Misconfigured != nil && r.d.Misconfigured() != nil {
		parts["database"] = "misconfigured" // the log says how to fix it
	}
	if err := r.d.Webhooks.Ready(); err != nil {
		parts["ingest"] = "failing"
		r.d.Log.Debug("not ready: webhooks are not being committed", zap.Error(err))
	}
	switch {
	case r.d.PollOnly:
		parts["listener"] = "not used"
	case r.d.Listening != nil && !r.d.Listening():
		parts["listener"] = "disconnected"
	}
	return parts["database"] == "ok" && parts["ingest"] == "ok" && parts["listener"] != "disconnected", parts
}

// ping pings the database, or answers what the last ping within a second found.
func (r *Readiness) ping(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.pingedAt) < time.Second {
		return r.dbErr
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.dbErr, r.pingedAt = r.d.Pool.Ping(ctx), time.Now()
	if r.dbErr != nil {
		r.d.Log.Warn("not ready: the database does not answer", zap.Error(r.dbErr))
	}
	return r.dbErr
}

func readyz(ready *Readiness) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		ok, parts := ready.Check(r.Context())
		if !ok {
			status = http.StatusServiceUnavailable
		}
		jsonhttp.Write(w, status, parts)
	}
}

func metricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

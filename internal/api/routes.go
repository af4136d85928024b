package api

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"inboxd/internal/jsonhttp"
	"inboxd/internal/tracing"
)

// routeSet says which routes a router serves (NewRouters).
type routeSet int

const (
	every routeSet = iota
	publicRoutes
	internalRoutes
)

// routes lists every route of inboxd, one line each. The /v1 reads go to ReadPool
// (a replica when the read database setting names one: a message may show there a moment
// after it is processed); the admin endpoints stay on the primary. Webhooks carry their own
// authentication (signatures) and no request timeout of ours: the provider's client
// has one, and cutting a request short would only turn a commit in progress into a
// retry. The /v1 routes get bearer tokens and a 10 s timeout; admin tokens may also
// read. Health, metrics and the OpenAPI document are open. which picks the public or
// the internal share of them, or every route (NewRouters).
func routes(r chi.Router, d Deps, which routeSet) {
	public, internal := which != internalRoutes, which != publicRoutes
	// Every /v1 route checks its token, then its query's parameter names (knownQuery),
	// in that order: a stranger learns nothing of the parameters.
	known := knownQuery(d.Log)
	readToken := requireToken(append(append([]string{}, d.APITokens...), d.AdminTokens...), "API", d.name("API_TOKENS")+" (or "+d.name("ADMIN_TOKENS")+")")
	adminToken := requireToken(d.AdminTokens, "admin", d.name("ADMIN_TOKENS"))
	read := func(h http.Handler) http.Handler { return readToken(known(h)) }
	admin := func(h http.Handler) http.Handler { return adminToken(known(h)) }
	api := middleware.Timeout(10 * time.Second)
	log := d.Log

	r.Get("/healthz", healthz)
	r.Get("/openapi.yaml", openapiDocument)
	if internal {
		r.Get("/readyz", readyz(d.Readiness))
		r.Method("GET", "/metrics", metricsHandler(d.Gatherer))
	}

	var hookPaths []string
	if public {
		for _, hook := range d.Webhooks.Routes() { // one per provider (internal/provider/registry)
			hookPaths = append(hookPaths, hook.Path)
			r.Method("POST", hook.Path, traced(d, "POST "+hook.Path, hook.Post))
			if hook.Handshake != nil {
				r.Get(hook.Path, hook.Handshake)
			}
		}
		r.With(api, read).Get("/v1/conversations", listConversations(d.ReadPool, d.Redaction, log))
		r.With(api, read).Get("/v1/conversations/{id}", getConversation(d.ReadPool, log))
		r.With(api, read).Get("/v1/conversations/{id}/messages", listMessages(d.ReadPool, log))
		r.With(api, read).Get("/v1/messages", findMessages(d.ReadPool, log))
		if d.Changes != nil {
			// No 10 s timeout: a long poll waits up to a minute, a stream for ever.
			r.With(read).Get("/v1/changes", listChanges(d.Pool, d.Changes, log))
			r.With(read).Get("/v1/changes/stream", streamChanges(d.Pool, d.Changes, log))
		}
	}
	if internal {
		r.With(api, admin).Get("/v1/events", listEvents(d.Pool, log))
		r.With(api, admin).Post("/v1/events/replay", replayEvents(d.Pool, log))
		r.With(api, admin).Get("/v1/events/{id}", getEvent(d.Pool, log))
		r.With(api, admin).Post("/v1/events/{id}/replay", replayEvent(d.Pool, log))
		r.With(api, admin).Get("/v1/stats", stats(d.Pool, log))
		if d.Eraser != nil {
			r.With(api, admin).Post("/v1/erasures", startErasure(d.Pool, d.Eraser, log))
			r.With(api, admin).Get("/v1/erasures/{id}", getErasure(d.Eraser, log))
			// No 10 s timeout: an export streams for as long as the contact's history takes.
			r.With(admin).Get("/v1/contacts/{address}/export", exportContact(d.Pool, d.Eraser, log))
		}
		if d.Console != nil {
			// Its own login, sessions and CSRF tokens (internal/console).
			r.Mount("/console", d.Console)
		}
		if dl := d.Deliveries; dl != nil {
			r.With(api, admin).Post("/v1/subscriptions", createSubscription(d.Pool, dl.AllowPrivate, dl.Wake, log))
			r.With(api, admin).Get("/v1/subscriptions", listSubscriptions(d.Pool, log))
			r.With(api, admin).Get("/v1/subscriptions/{id}", getSubscription(d.Pool, log))
			r.With(api, admin).Delete("/v1/subscriptions/{id}", deleteSubscription(d.Pool, log))
			r.With(api, admin).Patch("/v1/subscriptions/{id}", updateSubscription(d.Pool, dl.AllowPrivate, dl.Wake, log))
			r.With(api, admin).Post("/v1/subscriptions/{id}/pause", pauseSubscription(d.Pool, log))
			r.With(api, admin).Post("/v1/subscriptions/{id}/resume", resumeSubscription(d.Pool, dl.Wake, log))
			r.With(api, admin).Post("/v1/subscriptions/{id}/replay", replaySubscription(d.Pool, dl.Wake, log))
			r.With(api, admin).Post("/v1/subscriptions/{id}/rotate-secret", rotateSecret(d.Pool, log))
			r.With(api, admin).Delete("/v1/subscriptions/{id}/previous-secret", endPreviousSecret(d.Pool, log))
			if dl.Ping != nil {
				r.With(api, admin).Post("/v1/subscriptions/{id}/ping", pingSubscription(dl.Ping, log))
			}
			r.With(api, admin).Get("/v1/subscriptions/{id}/deliveries", listDeliveries(d.Pool, log))
		}
	}

	patterns := sync.OnceValue(func() []string { return routePatterns(r) }) // every route is in by the first request
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		if len(hookPaths) > 0 && strings.HasPrefix(req.URL.Path, "/webhooks/") {
			// A provider's name misspelt in the URL a provider was given.
			jsonhttp.Error(w, http.StatusNotFound, "not_found", fmt.Sprintf("no webhook is at %q; the providers' webhooks are %s",
				clip(req.URL.Path), strings.Join(hookPaths, ", ")))
			return
		}
		msg := "no such endpoint; GET /openapi.yaml lists them all"
		if near := nearRoutes(patterns(), req.URL.Path); len(near) > 0 {
			msg = fmt.Sprintf("no endpoint is at %q; near it: %s (GET /openapi.yaml describes each)", clip(req.URL.Path), strings.Join(near, ", "))
		}
		jsonhttp.Error(w, http.StatusNotFound, "not_found", msg)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		allowed := allowedMethods(r, req.URL.Path)
		w.Header().Set("Allow", strings.Join(allowed, ", ")) // as RFC 9110 asks of a 405
		jsonhttp.Error(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %q; it takes %s (GET /openapi.yaml describes each)",
			clip(req.Method), clip(req.URL.Path), strings.Join(allowed, ", ")))
	})
}

// allowedMethods lists the methods some route of r serves path with; HEAD goes
// with GET (middleware.GetHead, newRouter).
func allowedMethods(r chi.Routes, path string) []string {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if !r.Match(chi.NewRouteContext(), m, path) {
			continue
		}
		allowed = append(allowed, m)
		if m == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	return allowed
}

// routePatterns lists the router's route patterns (/v1/conversations/{id}/messages).
func routePatterns(r chi.Routes) []string {
	var out []string
	_ = chi.Walk(r, func(_, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		out = append(out, strings.TrimSuffix(route, "/*"))
		return nil
	})
	return out
}

// nearRoutes names where a path that matches no route was probably meant to go: the
// routes that share the most leading segments with it ({id} matching any), each cut
// one segment past what they share, so /v1/conversation gives the /v1 collections
// and /v1/conversations/7/mesages gives /v1/conversations/{id}/messages. A route
// the path runs past (/v1/conversations/{id} there) counts for a little less than
// one that goes on. None when the path shares nothing with any route.
func nearRoutes(patterns []string, path string) []string {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	best, near := 1, map[string]bool{}
	for _, p := range patterns {
		ps := strings.Split(strings.Trim(p, "/"), "/")
		n := 0
		for n < len(ps) && n < len(segs) && (ps[n] == segs[n] || strings.HasPrefix(ps[n], "{") && segs[n] != "") {
			n++
		}
		score := 2 * n
		if n == len(ps) && n < len(segs) {
			score--
		}
		if score < best {
			continue
		}
		if score > best {
			best, near = score, map[string]bool{}
		}
		near["/"+strings.Join(ps[:min(n+1, len(ps))], "/")] = true
	}
	return slices.Sorted(maps.Keys(near))
}

// traced gives a webhook route its HTTP server span when tracing is on. The route is
// public: anyone may send a traceparent, so by default the span starts a trace of its
// own, linked to the one the client named, rather than joining it (a client must not
// choose the stored trace id, nor, through a parent-based sampler, whether its request
// is sampled). TrustTraceparent, for callers inside the operator's network, makes the
// span the child of the caller's. Off, the handler runs bare.
func traced(d Deps, name string, h http.Handler) http.Handler {
	if d.Tracing == nil {
		return h
	}
	opts := []otelhttp.Option{otelhttp.WithTracerProvider(d.Tracing),
		otelhttp.WithPropagators(tracing.Propagator), otelhttp.WithMeterProvider(metricnoop.NewMeterProvider())}
	if !d.TrustTraceparent {
		opts = append(opts, otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }))
	}
	return otelhttp.NewHandler(h, name, opts...)
}

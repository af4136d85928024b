package api

import (
	"github.com/go-chi/chi/v5"
)

// routes lists every route of inboxd, one line each.
func routes(r chi.Router, d Deps) {
	r.Get("/healthz", healthz)
	r.Get("/readyz", readyz(d))
	r.Method("GET", "/metrics", metricsHandler(d.Gatherer))

	r.Post("/webhooks/generic", d.Webhooks.Generic())
	r.Post("/webhooks/twilio", d.Webhooks.Twilio())
	r.Get("/webhooks/meta", d.Webhooks.MetaVerify())
	r.Post("/webhooks/meta", d.Webhooks.Meta())
}

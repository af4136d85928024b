package api

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/jsonhttp"
	"inboxd/internal/privacy"
)

// maxErasureBody bounds POST /v1/erasures' body: an address and a provider name.
const maxErasureBody = 4 << 10

// startErasure: POST /v1/erasures {"contact": …, "provider": …} answers 202 with the
// receipt (running); the erasure runs in the background (privacy.Eraser.Work). With
// "dry_run": true it answers 200 with what the erasure would remove now and the
// address as it was looked up, and erases nothing.
func startErasure(pool *pgxpool.Pool, e *privacy.Eraser, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		var req struct {
			Contact  string `json:"contact"`
			Provider string `json:"provider"`
			DryRun   bool   `json:"dry_run"`
		}
		if err := decodeBody(r, maxErasureBody, &req, `{"contact": "+15551234567", "provider": "twilio", "dry_run": true} (provider and dry_run optional)`); err != nil {
			return nil, err
		}
		s, err := e.Subject(req.Contact, req.Provider)
		if err != nil {
			return nil, err
		}
		if req.DryRun {
			c, err := privacy.DryRun(r.Context(), pool, s)
			if err != nil {
				return nil, err
			}
			return privacy.NewPreview(s, c), nil
		}
		rec, err := e.Start(r.Context(), s)
		if err != nil {
			return nil, err
		}
		return withStatus{http.StatusAccepted, rec}, nil
	})
}

// getErasure: GET /v1/erasures/{id}, the receipt.
func getErasure(e *privacy.Eraser, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		id, err := idParam(r)
		if err != nil {
			return nil, err
		}
		return e.Find(r.Context(), id)
	})
}

// exportContact: GET /v1/contacts/{address}/export streams everything held about
// the address (URL-escaped: %2B for "+") as one JSON document. ?provider= limits it
// to one provider. An error before the first byte is answered as usual; after it,
// the document is left unfinished (and the error logged), which no JSON reader
// takes for a complete one.
func exportContact(pool *pgxpool.Pool, e *privacy.Eraser, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		address, err := url.PathUnescape(chi.URLParam(r, "address"))
		if err != nil {
			respondErr(log, w, r, badParam("the address in the path is not URL-escaped correctly: %v", err))
			return
		}
		prov, err := textParam(r, "provider")
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		s, err := e.Subject(address, prov)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		out := &jsonhttp.Lazy{W: w}
		if r.Method == http.MethodHead {
			// The GET's status and type, without reading the contact's whole history
			// only to send none of it.
			out.Start()
			return
		}
		// The server's write deadline is sized for webhooks; an export takes as long as
		// the contact's history (the client's hang-up still ends it, through ctx).
		_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
		if _, err := privacy.Export(r.Context(), pool, s, out); err != nil {
			if !out.Started {
				respondErr(log, w, r, err)
				return
			}
			log.Error("export cut short", zap.String("request_id", reqID(r)), zap.Error(err))
			// The 200 and part of the document are sent: end the connection without the
			// response's end, so that the client sees a broken response, not a short
			// document that reads as whole.
			panic(http.ErrAbortHandler)
		}
	}
}

// privacyErr maps the privacy and delivery packages' errors onto the API's: a
// status, a code and the message.
func privacyErr(err error) (int, string, string, bool) {
	switch {
	case errors.Is(err, privacy.ErrBadRequest), errors.Is(err, delivery.ErrBadRequest):
		return http.StatusBadRequest, "bad_parameter", reason(err), true
	case errors.Is(err, delivery.ErrNotFound):
		return http.StatusNotFound, "not_found", err.Error() + "; GET /v1/subscriptions lists them", true
	case errors.Is(err, delivery.ErrConflict):
		return http.StatusConflict, "conflict", err.Error(), true
	case errors.Is(err, privacy.ErrNotFound):
		return http.StatusNotFound, "not_found", err.Error(), true
	}
	return 0, "", "", false
}

// withStatus is a response with a status other than 200.
type withStatus struct {
	status int
	body   any
}

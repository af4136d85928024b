package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/jsonhttp"
)

// Subscriptions are the admin endpoints of outbound webhooks (internal/delivery):
// they change rows; this process's deliverer is woken after a change that gives it
// work (wake), the others see it at their next pass.

// maxSubscriptionBody bounds a subscription request's body: a URL and a few types.
const maxSubscriptionBody = 16 << 10

// decodeBody reads a small JSON body into v, refusing unknown fields; example shows
// the shape in the error. Every JSON request body of the admin API goes through it.
func decodeBody(r *http.Request, limit int64, v any, example string) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if tooLarge := new(http.MaxBytesError); errors.As(err, &tooLarge) { // the problem names the limit
			return badParam("%s; this endpoint takes %s", jsonhttp.Problem(err), example)
		}
		return badParam("%s; this endpoint takes %s, at most %d bytes", jsonhttp.Problem(err), example, limit)
	}
	// A second value (two objects sent together, say) would otherwise be ignored
	// without a word, and with it whatever the caller meant by it.
	if _, err := dec.Token(); err != io.EOF {
		return badParam("the body must be one JSON value, %s, with nothing after it", example)
	}
	return nil
}

// createSubscription: POST /v1/subscriptions {"url", "types"} answers 201 with the
// subscription and its secret.
func createSubscription(pool *pgxpool.Pool, allowPrivate bool, wake func(), log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		var req struct {
			URL       string   `json:"url"`
			Types     []string `json:"types"`
			Providers []string `json:"providers"`
		}
		if err := decodeBody(r, maxSubscriptionBody, &req, `{"url": "https://crm.example.com/hooks/inboxd", "types": ["message.created"]} (and "providers": ["meta"] for some only)`); err != nil {
			return nil, err
		}
		s, err := delivery.Create(r.Context(), pool, req.URL, req.Types, allowPrivate, req.Providers...)
		if err != nil {
			return nil, err
		}
		log.Info("subscription created", zap.Int64("subscription_id", s.ID), zap.Strings("types", s.Types))
		wake()
		return withStatus{http.StatusCreated, s}, nil
	})
}

// updateSubscription: PATCH /v1/subscriptions/{id} {"url", "types", "providers"} (any)
// answers with the subscription, its position and secret kept.
func updateSubscription(pool *pgxpool.Pool, allowPrivate bool, wake func(), log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		var req struct {
			URL       *string   `json:"url"`
			Types     []string  `json:"types"`
			Providers *[]string `json:"providers"`
		}
		if err := decodeBody(r, maxSubscriptionBody, &req, `{"url": "https://crm.example.com/hooks/inboxd", "types": ["message.created"], "providers": ["meta"]} (any of them; "providers": [] for every provider)`); err != nil {
			return nil, err
		}
		s, err := delivery.Update(r.Context(), pool, id, delivery.Change{URL: req.URL, Types: req.Types, Providers: req.Providers}, allowPrivate)
		if err != nil {
			return nil, err
		}
		log.Info("subscription updated", zap.Int64("subscription_id", id), zap.Bool("url_changed", req.URL != nil), zap.Strings("types", s.Types))
		wake()
		return s, nil
	})
}

// listSubscriptions: GET /v1/subscriptions, without secrets (none is [], as
// pgx.CollectRows gives).
func listSubscriptions(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		subs, err := delivery.List(r.Context(), pool)
		if err != nil {
			return nil, err
		}
		return map[string]any{"data": subs}, nil
	})
}

// subscriptionAction is a handler of /v1/subscriptions/{id}…: do runs with the id.
func subscriptionAction(log *zap.Logger, do func(r *http.Request, id int64) (any, error)) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		id, err := idParam(r)
		if err != nil {
			return nil, err
		}
		return do(r, id)
	})
}

func getSubscription(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		return delivery.Get(r.Context(), pool, id)
	})
}

func deleteSubscription(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		if err := delivery.Delete(r.Context(), pool, id); err != nil {
			return nil, err
		}
		log.Info("subscription deleted", zap.Int64("subscription_id", id))
		return withStatus{status: http.StatusNoContent}, nil
	})
}

func pauseSubscription(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		return delivery.Pause(r.Context(), pool, id)
	})
}

func resumeSubscription(pool *pgxpool.Pool, wake func(), log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		s, err := delivery.Resume(r.Context(), pool, id)
		wake()
		return s, err
	})
}

// replaySubscription: POST /v1/subscriptions/{id}/replay {"from": change id}, that
// change included.
func replaySubscription(pool *pgxpool.Pool, wake func(), log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		var req struct {
			From *string `json:"from"`
		}
		if err := decodeBody(r, maxSubscriptionBody, &req, `{"from": "<change id>"} ("" replays everything kept)`); err != nil {
			return nil, err
		}
		if req.From == nil {
			return nil, badParam(`from is required: the change id to deliver again from, itself included (a dead delivery's change_id, say), or "" for everything kept`)
		}
		s, err := delivery.Replay(r.Context(), pool, id, *req.From)
		if err != nil {
			return nil, err
		}
		log.Info("subscription replay", zap.Int64("subscription_id", id), zap.String("from", *req.From))
		wake()
		return s, nil
	})
}

// rotateSecret: POST /v1/subscriptions/{id}/rotate-secret {"keep_previous_seconds": n}
// (the body is optional) answers with the subscription and its new secret.
func rotateSecret(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		var req struct {
			KeepPreviousSeconds *int64 `json:"keep_previous_seconds"`
		}
		if r.ContentLength != 0 {
			if err := decodeBody(r, maxSubscriptionBody, &req, `{"keep_previous_seconds": 86400} (or no body: a day)`); err != nil {
				return nil, err
			}
		}
		keep := delivery.DefaultPreviousSecret
		if req.KeepPreviousSeconds != nil {
			most := int64(delivery.MaxPreviousSecret / time.Second)
			if n := *req.KeepPreviousSeconds; n < 0 || n > most {
				return nil, badParam("keep_previous_seconds must be from 0 (the previous secret stops signing at once) to %d (a week), got %d", most, n)
			}
			keep = time.Duration(*req.KeepPreviousSeconds) * time.Second
		}
		s, err := delivery.RotateSecret(r.Context(), pool, id, keep)
		if err != nil {
			return nil, err
		}
		log.Info("subscription secret rotated", zap.Int64("subscription_id", id), zap.Duration("previous_kept", keep))
		return s, nil
	})
}

// endPreviousSecret: DELETE /v1/subscriptions/{id}/previous-secret stops the secret
// the last rotation replaced from signing, at once.
func endPreviousSecret(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		s, err := delivery.EndPreviousSecret(r.Context(), pool, id)
		if err != nil {
			return nil, err
		}
		log.Info("subscription previous secret ended", zap.Int64("subscription_id", id))
		return s, nil
	})
}

// pingSubscription: POST /v1/subscriptions/{id}/ping sends the endpoint a signed
// ping and answers with what it got (200 whatever the endpoint answered: the ping
// worked; its answer is in the body).
func pingSubscription(ping func(context.Context, int64) (delivery.Ping, error), log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		p, err := ping(r.Context(), id)
		if err != nil {
			return nil, err
		}
		log.Info("subscription pinged", zap.Int64("subscription_id", id), zap.Bool("delivered", p.Delivered))
		return p, nil
	})
}

// listDeliveries: GET /v1/subscriptions/{id}/deliveries?state=&before=&limit=, newest
// first; next_cursor is the before= of the next page.
func listDeliveries(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return subscriptionAction(log, func(r *http.Request, id int64) (any, error) {
		limit, err := limitParam(r)
		if err != nil {
			return nil, err
		}
		var before int64
		if s := r.URL.Query().Get("before"); s != "" {
			if before, err = strconv.ParseInt(s, 10, 64); err != nil || before < 1 {
				return nil, badParam("before must be a delivery id from a previous page's next_cursor, got %q", clip(s))
			}
		}
		ds, err := delivery.Deliveries(r.Context(), pool, id, r.URL.Query().Get("state"), before, limit)
		if err != nil {
			return nil, err
		}
		p := page[delivery.Delivery]{Data: ds}
		if len(ds) == limit {
			next := strconv.FormatInt(ds[len(ds)-1].ID, 10)
			p.NextCursor = &next
		}
		return p, nil
	})
}

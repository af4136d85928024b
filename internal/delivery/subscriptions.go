package delivery

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/feed"
	"inboxd/internal/provider/registry"
)

// What the API and the CLI do with subscriptions. Every function takes the pool of
// the primary.

// ErrBadRequest wraps what a caller got wrong (a URL, a type, a cursor); ErrNotFound,
// an id that names no subscription.
var (
	ErrBadRequest = errors.New("bad request")
	ErrNotFound   = errors.New("not found")
	// ErrConflict: the request does not fit the subscription's state (a rotation
	// while the previous one's old secret still signs).
	ErrConflict = errors.New("conflict")
)

// States are the states of deliveries.state.
var States = []string{"waiting", "pending", "delivering", "delivered", "dead"}

// Subscription is a subscription as the API shows it. Secret is in every answer
// about one subscription (admin only), never in a list.
type Subscription struct {
	ID           int64      `json:"id"`
	URL          string     `json:"url"`
	Types        []string   `json:"types"`
	Secret       string     `json:"secret,omitempty"`
	State        string     `json:"state"`
	CreatedAt    time.Time  `json:"created_at"`
	Cursor       string     `json:"cursor"`
	Failures     int        `json:"consecutive_failures"`
	BlockedUntil *time.Time `json:"blocked_until"`
	// Providers: only these providers' conversations' changes are sent (a provider's
	// name takes in its named senders); null: every provider's.
	Providers []string `json:"providers"`
	// PreviousSecretExpiresAt: after a rotation (RotateSecret), until when the secret
	// it replaced signs deliveries too; null when none does.
	PreviousSecretExpiresAt *time.Time       `json:"previous_secret_expires_at"`
	Deliveries              map[string]int64 `json:"deliveries,omitempty"`
}

// stillSigns holds while the secret a rotation replaced still signs deliveries
// (RotateSecret); once its time has run out the sweep deletes it (forgetSecrets).
const stillSigns = `previous_secret_until > now()`

// previousSecret is the secret a rotation replaced while it still signs; NULL after.
const previousSecret = `CASE WHEN ` + stillSigns + ` THEN previous_secret END`

const subscriptionColumns = `id, url, types, secret, state, created_at, cursor_xid::text || '.' || cursor_seq, failures, blocked_until, providers,
    CASE WHEN ` + stillSigns + ` THEN previous_secret_until END`

func scanSubscription(row pgx.CollectableRow) (Subscription, error) {
	var s Subscription
	err := row.Scan(&s.ID, &s.URL, &s.Types, &s.Secret, &s.State, &s.CreatedAt, &s.Cursor, &s.Failures, &s.BlockedUntil, &s.Providers, &s.PreviousSecretExpiresAt)
	return s, err
}

// newSecret is a whsec_ secret: 32 random bytes, as Standard Webhooks libraries take.
func newSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// withErasures adds contact.erased to types that carry a contact's data (all the
// others): a subscriber that is sent a contact's conversations or messages is told
// when they are erased, so that it can erase its copies, as an erasure must reach
// everyone the data was disclosed to.
func withErasures(types []string) []string {
	for _, t := range types {
		if t != feed.ContactErased {
			return append(slices.Clone(types), feed.ContactErased)
		}
	}
	return types
}

// checkTypes: at least one type, each a change type. It returns them as stored:
// sorted, once each, with contact.erased where withErasures adds it.
func checkTypes(types []string) ([]string, error) {
	if len(types) == 0 {
		return nil, fmt.Errorf("%w: types must name at least one of %s", ErrBadRequest, strings.Join(feed.Types, ", "))
	}
	for _, t := range types {
		if !slices.Contains(feed.Types, t) {
			return nil, fmt.Errorf("%w: types: %q is not a change type; use %s", ErrBadRequest, truncate(t, 64), strings.Join(feed.Types, ", "))
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(withErasures(types)))), nil
}

// maxProviders bounds a subscription's providers: a few senders, not a list to
// match every change against.
const maxProviders = 32

// checkProviders: each a provider inboxd has (or a named sender of one: "generic:acme"),
// at most maxProviders. It returns them as stored: sorted, once each; none is nil,
// every provider.
func checkProviders(providers []string) ([]string, error) {
	if len(providers) > maxProviders {
		return nil, fmt.Errorf("%w: providers names %d, at most %d", ErrBadRequest, len(providers), maxProviders)
	}
	for _, p := range providers {
		if !registry.Known(p) || len(p) > 64 {
			return nil, fmt.Errorf("%w: providers: %q is not a provider; use %s, or a named sender such as generic:acme",
				ErrBadRequest, truncate(p, 64), strings.Join(registry.Names(), ", "))
		}
	}
	if len(providers) == 0 {
		return nil, nil
	}
	return slices.Compact(slices.Sorted(slices.Values(providers))), nil
}

// createSubscription starts the subscription at the feed's head: it gets the
// changes that become final after it is made (POST …/replay goes back further).
const createSubscription = `
INSERT INTO subscriptions (url, types, secret, providers, cursor_xid, cursor_seq)
SELECT $1, $2, $3, $4, coalesce(h.xid, '0'::xid8), coalesce(h.seq, 0)
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT xid, seq FROM changes
                   WHERE xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
                   ORDER BY xid DESC, seq DESC LIMIT 1) h ON true
RETURNING ` + subscriptionColumns

// Create makes a subscription of url to the given change types, with a new secret:
// of the given providers' conversations only (none: every provider's). The URL
// must be public unless allowPrivate (CheckURL). A subscription to any type that
// carries a contact's data gets contact.erased as well (withErasures).
func Create(ctx context.Context, pool *pgxpool.Pool, url string, types []string, allowPrivate bool, providers ...string) (Subscription, error) {
	// The types and providers first: a misspelt one is the caller's to fix whatever
	// the URL's DNS says, and checking it costs no lookup.
	types, err := checkTypes(types)
	if err != nil {
		return Subscription{}, err
	}
	if providers, err = checkProviders(providers); err != nil {
		return Subscription{}, err
	}
	if err := CheckURL(ctx, url, allowPrivate); err != nil {
		return Subscription{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	rows, _ := pool.Query(ctx, createSubscription, url, types, newSecret(), providers)
	s, err := pgx.CollectExactlyOneRow(rows, scanSubscription)
	if err != nil {
		return Subscription{}, fmt.Errorf("create subscription: %w", err)
	}
	return s, nil
}

// updateSubscription sets the URL ($2; NULL: kept), the types ($3; NULL: kept) and,
// when $5, the providers ($4; NULL: every provider). A new URL is a new endpoint:
// the breaker is closed. The position is kept: the changes after it go to the new
// URL, as the new types and providers choose them.
const updateSubscription = `
UPDATE subscriptions
SET url = coalesce($2, url), types = coalesce($3, types), providers = CASE WHEN $5 THEN $4 ELSE providers END,
    failures = CASE WHEN $2 IS NULL OR $2 = url THEN failures ELSE 0 END,
    blocked_until = CASE WHEN $2 IS NULL OR $2 = url THEN blocked_until END
WHERE id = $1
RETURNING ` + subscriptionColumns

// Change is what Update changes; a nil field is kept. Providers set to an empty
// list is every provider.
type Change struct {
	URL       *string
	Types     []string
	Providers *[]string
}

// Update changes a subscription's URL, types or providers in place, as Create
// checks them: it keeps its position and its secret, where deleting it and
// subscribing again would start at the feed's head and skip what came in between.
// Deliveries already made go to the new URL at their next attempt (one in flight
// finishes at the old one); changes already fanned out keep their deliveries
// whatever the new types and providers.
func Update(ctx context.Context, pool *pgxpool.Pool, id int64, c Change, allowPrivate bool) (Subscription, error) {
	url, types := c.URL, c.Types
	if url == nil && types == nil && c.Providers == nil {
		return Subscription{}, fmt.Errorf("%w: nothing to change: give url, types, providers or several", ErrBadRequest)
	}
	var providers []string
	if c.Providers != nil {
		var err error
		if providers, err = checkProviders(*c.Providers); err != nil {
			return Subscription{}, err
		}
	}
	if types != nil {
		var err error
		if types, err = checkTypes(types); err != nil {
			return Subscription{}, err
		}
	}
	if url != nil {
		if err := CheckURL(ctx, *url, allowPrivate); err != nil {
			return Subscription{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
	}
	return one(ctx, pool, updateSubscription, id, url, types, providers, c.Providers != nil)
}

// countDeliveries counts a subscription's deliveries by state.
const countDeliveries = `SELECT state, count(*) FROM deliveries WHERE subscription_id = $1 GROUP BY state`

// Get returns a subscription with its secret and its deliveries counted by state.
func Get(ctx context.Context, pool *pgxpool.Pool, id int64) (Subscription, error) {
	s, err := one(ctx, pool, `SELECT `+subscriptionColumns+` FROM subscriptions WHERE id = $1`, id)
	if err != nil {
		return s, err
	}
	rows, _ := pool.Query(ctx, countDeliveries, id)
	s.Deliveries = map[string]int64{}
	for _, st := range States {
		s.Deliveries[st] = 0
	}
	var state string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error { s.Deliveries[state] = n; return nil }); err != nil {
		return s, fmt.Errorf("count deliveries: %w", err)
	}
	return s, nil
}

// Outbound is the outbound side at a glance (the console's overview): subscriptions
// by state, those whose breaker is open, and the deliveries still owed (waiting,
// pending, delivering) and dead.
type Outbound struct {
	Subscriptions, Active, Paused, BreakerOpen int
	Owed, Dead                                 int64
}

// outbound counts per subscription through deliveries_listing (subscription_id,
// state, id): its cost is what is owed and dead, never the delivered history.
const outbound = `
SELECT count(*)::int, count(*) FILTER (WHERE s.state = 'active')::int, count(*) FILTER (WHERE s.state = 'paused')::int,
       count(*) FILTER (WHERE s.blocked_until > now())::int, coalesce(sum(o.owed), 0)::bigint, coalesce(sum(o.dead), 0)::bigint
FROM subscriptions s
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.state <> 'dead') AS owed, count(*) FILTER (WHERE d.state = 'dead') AS dead
    FROM deliveries d
    WHERE d.subscription_id = s.id AND d.state IN ('waiting', 'pending', 'delivering', 'dead')
) o`

// ReadOutbound reads Outbound.
func ReadOutbound(ctx context.Context, pool *pgxpool.Pool) (Outbound, error) {
	var o Outbound
	if err := pool.QueryRow(ctx, outbound).Scan(&o.Subscriptions, &o.Active, &o.Paused, &o.BreakerOpen, &o.Owed, &o.Dead); err != nil {
		return Outbound{}, fmt.Errorf("read the outbound side: %w", err)
	}
	return o, nil
}

// one reads one subscription; a missing one is ErrNotFound, and each caller (API,
// CLI, console) says where its user finds the list.
func one(ctx context.Context, pool *pgxpool.Pool, sql string, args ...any) (Subscription, error) {
	rows, _ := pool.Query(ctx, sql, args...)
	s, err := pgx.CollectExactlyOneRow(rows, scanSubscription)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, fmt.Errorf("subscription %v: %w", args[0], ErrNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("subscription %v: %w", args[0], err)
	}
	return s, nil
}

// List returns every subscription, without secrets.
func List(ctx context.Context, pool *pgxpool.Pool) ([]Subscription, error) {
	rows, _ := pool.Query(ctx, `SELECT `+subscriptionColumns+` FROM subscriptions ORDER BY id`)
	subs, err := pgx.CollectRows(rows, scanSubscription)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	for i := range subs {
		subs[i].Secret = ""
	}
	return subs, nil
}

// Delete removes a subscription and its deliveries; deliveries in flight finish
// without effect.
func Delete(ctx context.Context, pool *pgxpool.Pool, id int64) error {
	tag, err := pool.Exec(ctx, `DELETE FROM subscriptions WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete subscription %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("subscription %d: %w", id, ErrNotFound)
	}
	return nil
}

// Pause stops fan-out and sends for a subscription; what is in flight finishes.
// Changes committed while it is paused are delivered after Resume.
func Pause(ctx context.Context, pool *pgxpool.Pool, id int64) (Subscription, error) {
	return one(ctx, pool, `UPDATE subscriptions SET state = 'paused' WHERE id = $1 RETURNING `+subscriptionColumns, id)
}

// resume restarts a paused subscription with a closed breaker, and restarts the
// give-up clock of what waited while it was paused.
const resume = `
WITH s AS (
    UPDATE subscriptions SET state = 'active', failures = 0, blocked_until = NULL
    WHERE id = $1 RETURNING ` + subscriptionColumns + `
), clock AS (
    UPDATE deliveries SET since = now()
    WHERE subscription_id = $1 AND state IN ('waiting', 'pending') AND EXISTS (SELECT FROM s)
)
SELECT * FROM s`

// Resume restarts a paused subscription (and closes an active one's breaker).
func Resume(ctx context.Context, pool *pgxpool.Pool, id int64) (Subscription, error) {
	return one(ctx, pool, resume, id)
}

// MaxPreviousSecret bounds how long a rotated-out secret may go on signing: a week
// is time enough to redeploy an endpoint, and a secret that leaked should stop soon.
const MaxPreviousSecret = 7 * 24 * time.Hour

// DefaultPreviousSecret is how long the secret a rotation replaces goes on signing
// when the caller does not say: a day to redeploy the endpoint.
const DefaultPreviousSecret = 24 * time.Hour

// rotateSecret gives the subscription the new secret $2 and keeps the one it
// replaces signing for $3 ms (0: not at all, and a secret rotated out earlier stops
// too). While a secret rotated out earlier still signs, a rotation that keeps the
// current one is not made (no row): it would drop the secret an endpoint may still
// verify with.
const rotateSecret = `
UPDATE subscriptions
SET previous_secret = CASE WHEN $3 > 0 THEN secret END,
    previous_secret_until = CASE WHEN $3 > 0 THEN now() + $3 * interval '1 millisecond' END,
    secret = $2
WHERE id = $1 AND NOT ($3 > 0 AND coalesce(` + stillSigns + `, false))
RETURNING ` + subscriptionColumns

// RotateSecret gives a subscription a new secret, which signs every delivery from
// now on; the secret it replaces signs them too for keepPrevious (0: the old secret
// stops at once, as after a leak), each delivery carrying both signatures, so that
// the endpoint can switch to the new one without refusing a delivery in between.
// A second rotation while the first one's old secret still signs would leave an
// endpoint that has not switched yet with neither: it is refused (ErrConflict)
// unless keepPrevious is 0, which stops every secret but the new one.
func RotateSecret(ctx context.Context, pool *pgxpool.Pool, id int64, keepPrevious time.Duration) (Subscription, error) {
	if keepPrevious < 0 || keepPrevious > MaxPreviousSecret {
		return Subscription{}, fmt.Errorf("%w: the previous secret may go on signing for 0 (stop at once) up to %v, not %v", ErrBadRequest, MaxPreviousSecret, keepPrevious)
	}
	s, err := one(ctx, pool, rotateSecret, id, newSecret(), keepPrevious.Milliseconds())
	if errors.Is(err, ErrNotFound) {
		if cur, gerr := Get(ctx, pool, id); gerr == nil && cur.PreviousSecretExpiresAt != nil {
			return s, fmt.Errorf("%w: subscription %d: the secret its last rotation replaced still signs until %s, and its endpoint may not have switched yet; "+
				"rotating again would stop that secret. Wait until then, or rotate keeping nothing (0), which stops every secret but the new one at once",
				ErrConflict, id, cur.PreviousSecretExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	return s, err
}

// EndPreviousSecret stops the secret a rotation replaced from signing, before its
// time has run out (once the endpoint has switched to the new one), and deletes it.
func EndPreviousSecret(ctx context.Context, pool *pgxpool.Pool, id int64) (Subscription, error) {
	return one(ctx, pool, `UPDATE subscriptions SET previous_secret = NULL, previous_secret_until = NULL WHERE id = $1 RETURNING `+subscriptionColumns, id)
}

// replay moves the subscription's cursor back to $2.$3 (never forward): fan-out
// then makes deliveries of every change after it again, those delivered or dead
// included (each keeps its webhook-id, so consumers that dedupe see no duplicates).
// It closes the breaker: a replay is what an operator does once the endpoint is fixed.
const replay = `
UPDATE subscriptions SET cursor_xid = $2::text::xid8, cursor_seq = $3, failures = 0, blocked_until = NULL
WHERE id = $1 AND (cursor_xid, cursor_seq) >= ($2::text::xid8, $3)
RETURNING ` + subscriptionColumns

// Replay sends again the change from (a change id; "" is the oldest change kept)
// and every change after it. A change retention has deleted is refused
// (feed.ErrCursorExpired). It returns the subscription, its cursor moved back to
// just before from: (xid, seq-1) is below (xid, seq) and above every change before
// it, since seq is unique.
func Replay(ctx context.Context, pool *pgxpool.Pool, id int64, from string) (Subscription, error) {
	c, err := feed.ParseCursor(from)
	if err != nil {
		return Subscription{}, fmt.Errorf("%w: from: %w; give the change id to send again from (a dead delivery's change_id), or \"\" for every change kept", ErrBadRequest, err)
	}
	if from != "" {
		// Changes retention deleted cannot be sent again; fan-out would go on from
		// the oldest kept, and the replay would skip them without a word.
		if err := feed.Kept(ctx, pool, c); err != nil {
			return Subscription{}, fmt.Errorf("from = %s cannot be delivered again: %w; replay from \"\" to send every change kept", from, err)
		}
		if c.Seq > 0 {
			c.Seq--
		}
	}
	s, err := one(ctx, pool, replay, id, strconv.FormatUint(c.XID, 10), c.Seq)
	if errors.Is(err, ErrNotFound) {
		if _, gerr := Get(ctx, pool, id); gerr == nil {
			return s, fmt.Errorf("%w: from = %s is after the subscription's position, so there is nothing to replay; pass an earlier change id (a dead delivery's change_id, say)", ErrBadRequest, from)
		}
	}
	return s, err
}

// Delivery is a delivery as the API lists it.
type Delivery struct {
	ID             int64      `json:"id"`
	ChangeID       string     `json:"change_id"`
	ConversationID int64      `json:"conversation_id"`
	State          string     `json:"state"`
	Attempts       int        `json:"attempts"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	LastStatus     *int       `json:"last_status"`
	LastError      *string    `json:"last_error"`
	DeliveredAt    *time.Time `json:"delivered_at"`
	Since          time.Time  `json:"since"`
}

// listDeliveries lists a subscription's deliveries, newest first, in one state or all
// (” for all), before the id $3 (0: from the newest).
const listDeliveries = `
SELECT id, change_xid::text || '.' || change_seq, conversation_id, state, attempts,
       CASE WHEN state = 'pending' THEN run_at END, last_status, last_error, delivered_at, since
FROM deliveries
WHERE subscription_id = $1 AND ($2 = '' OR state = $2) AND ($3 = 0 OR id < $3)
ORDER BY id DESC
LIMIT $4`

// Deliveries lists a subscription's deliveries in a state ("" for all), newest
// first, before the delivery id before (0: the newest).
func Deliveries(ctx context.Context, pool *pgxpool.Pool, id int64, state string, before int64, limit int) ([]Delivery, error) {
	if state != "" && !slices.Contains(States, state) {
		return nil, fmt.Errorf("%w: state must be one of %s, got %q", ErrBadRequest, strings.Join(States, ", "), truncate(state, 64))
	}
	if _, err := one(ctx, pool, `SELECT `+subscriptionColumns+` FROM subscriptions WHERE id = $1`, id); err != nil {
		return nil, err
	}
	rows, _ := pool.Query(ctx, listDeliveries, id, state, before, limit)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Delivery])
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return out, nil
}

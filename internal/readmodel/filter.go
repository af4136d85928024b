package readmodel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
	"inboxd/internal/provider"
	"inboxd/internal/provider/registry"
)

// EventFilter selects events: newest first for ListEvents and SearchEvents, oldest
// first for a bulk replay (internal/replay). Each condition given becomes one in the
// SQL, so that each shape of filter gets its own plan, and each shape reads through
// an index in id order and stops after a page:
//   - State, Provider, ExternalID: the queue's indexes (ExternalID through the unique
//     (provider, external_id)).
//   - From, To: turned into a range of ids first (Resolve), since ids follow
//     received_at; the exact received_at conditions are kept as well.
//   - Contacts: read through (contact, id), one ordered scan per form.
//   - Text, Path (the payload's content): no index can serve them, so they are
//     applied to a window of at most SearchWindow events that the other conditions
//     select, and a page says where its window ended (SearchPage.Next): each query
//     is bounded, however rare the match.
type EventFilter struct {
	State    string `json:"state,omitempty"` // one of processor.States, or empty
	Provider string `json:"provider,omitempty"`
	// ExternalID is the provider's id of the delivery (a Twilio MessageSid, a
	// webhook-id); it needs Provider, whose unique index it is read through.
	ExternalID string `json:"external_id,omitempty"`
	// From and To bound received_at: From ≤ received_at < To; zero: no bound.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// Contacts are the forms a contact's address is stored under
	// (privacy.Subject.Forms): events whose contact is one of them.
	Contacts []string `json:"-"`
	// Text: the payload contains it (case-insensitive, as in the stored JSON text).
	Text string `json:"-"`
	// Path: the payload has an item at this SQL/JSON path in lax mode, such as
	// $.entry[*].changes[*].value.messages[*] ? (@.type == "image").
	Path string `json:"-"`
	// Error: dead events whose last error is exactly this (a group of the failures
	// page; "" with HasError: those without one). Dead events only: they are read
	// through their partial index, bounded by the dead retention.
	Error    string `json:"-"`
	HasError bool   `json:"-"`
	// Before and After bound the ids (exclusive); 0: no bound.
	Before int64 `json:"-"`
	After  int64 `json:"-"`
	Limit  int   `json:"-"`

	// fromID and toID are From and To as ids (Resolve): fromID ≤ id < toID.
	fromID, toID int64
	resolved     bool
}

// SearchWindow is the most events one query reads to apply the payload's conditions
// (Text, Path) to.
const SearchWindow = 10000

// Bounds of what a filter may ask, far above any real one.
const (
	maxText  = 256
	maxPath  = 512
	maxError = 4096
)

// ErrBadFilter wraps every reason Validate refuses a filter.
var ErrBadFilter = errors.New("bad filter")

// Validate checks a filter as every caller must: a known state and provider, and
// bounded text.
func (f EventFilter) Validate() error {
	if f.State != "" && !slices.Contains(processor.States, f.State) {
		return fmt.Errorf("%w: state must be one of %s, got %q", ErrBadFilter, strings.Join(processor.States, ", "), quoted(f.State))
	}
	if err := CheckProvider(f.Provider); err != nil {
		return err
	}
	if f.ExternalID != "" && f.Provider == "" {
		return fmt.Errorf("%w: an external id is looked up within a provider: choose the provider too", ErrBadFilter)
	}
	if f.HasError && f.State != "dead" {
		return fmt.Errorf("%w: an error is looked up among dead events: choose the state dead too", ErrBadFilter)
	}
	for _, t := range []struct{ name, v string }{{"an external id", f.ExternalID}, {"the text", f.Text}, {"the JSON path", f.Path}, {"the error", f.Error}} {
		limit := maxText
		switch t.name {
		case "the JSON path":
			limit = maxPath
		case "the error":
			limit = maxError
		}
		if len(t.v) > limit || !utf8.ValidString(t.v) || strings.ContainsRune(t.v, 0) {
			return fmt.Errorf("%w: %s is at most %d bytes of text", ErrBadFilter, t.name, limit)
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return fmt.Errorf("%w: the time range is empty: from (%s) must be before to (%s)", ErrBadFilter,
			f.From.UTC().Format(time.RFC3339), f.To.UTC().Format(time.RFC3339))
	}
	if f.Limit < 1 {
		return fmt.Errorf("%w: limit must be at least 1, got %d", ErrBadFilter, f.Limit)
	}
	return nil
}

// CheckProvider refuses a provider filter that names no provider (empty is no
// filter), listing the valid names.
func CheckProvider(name string) error {
	if name != "" && !registry.Known(name) {
		return fmt.Errorf("%w: provider must be one of %s, got %q", ErrBadFilter, strings.Join(registry.Names(), ", "), quoted(name))
	}
	return nil
}

// quoted shortens a value a client sent before it is echoed in an error.
func quoted(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// HasPayloadConditions reports whether f looks into payloads (and so reads windows).
func (f EventFilter) HasPayloadConditions() bool { return f.Text != "" || f.Path != "" }

// Resolve prepares f for its queries: it checks the JSON path with the database's
// own parser, and turns the time range into a range of ids. Ids are handed out in
// the order events are written and received_at is the writing transaction's start,
// so the two orders agree up to a transaction's length: the search for each bound
// goes a minute further out, and the exact received_at conditions do the rest.
func (f *EventFilter) Resolve(ctx context.Context, pool *pgxpool.Pool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if f.Path != "" {
		if _, err := pool.Exec(ctx, `SELECT $1::text::jsonpath`, f.Path); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				return fmt.Errorf("%w: the JSON path is not one: %s (it looks like $.field or $.list[*] ? (@.type == \"image\"))", ErrBadFilter, pgErr.Message)
			}
			return fmt.Errorf("check the JSON path: %w", err)
		}
	}
	if f.From.IsZero() && f.To.IsZero() {
		f.resolved = true
		return nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("resolve the time range: %w", err)
	}
	defer conn.Release()
	if !f.From.IsZero() {
		if f.fromID, err = firstIDAt(ctx, conn.Conn(), f.From.Add(-time.Minute)); err != nil {
			return err
		}
	}
	if !f.To.IsZero() {
		if f.toID, err = firstIDAt(ctx, conn.Conn(), f.To.Add(time.Minute)); err != nil {
			return err
		}
	}
	f.resolved = true
	return nil
}

// firstIDAt returns the first id whose event was received at or after t, by a binary
// search over the ids through the primary key (a lookup per step, some twenty on a
// million events), or one past the last id when there is none.
func firstIDAt(ctx context.Context, conn *pgx.Conn, t time.Time) (int64, error) {
	var lo, hi *int64
	if err := conn.QueryRow(ctx, `SELECT min(id), max(id) FROM inbound_events`).Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("resolve the time range: %w", err)
	}
	if lo == nil {
		return 0, nil
	}
	a, b := *lo, *hi+1 // the answer is in [a, b]
	for a < b {
		mid := a + (b-a)/2
		var id int64
		var at time.Time
		err := conn.QueryRow(ctx, `SELECT id, received_at FROM inbound_events WHERE id >= $1 ORDER BY id LIMIT 1`, mid).Scan(&id, &at)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			b = mid
		case err != nil:
			return 0, fmt.Errorf("resolve the time range: %w", err)
		case !at.Before(t):
			b = mid
		default:
			a = id + 1
		}
	}
	return a, nil
}

// query builds the SQL that selects cols of f's events in id order (descending
// unless asc), at most $1 of them. With payload conditions, they apply to a window
// of at most SearchWindow events the other conditions select.
func (f EventFilter) query(cols string, asc bool) (string, []any) {
	return f.build(cols, asc, true)
}

// build is query, with the payload conditions applied to a window or (not windowed,
// for a count under a statement timeout) to every event the others select. cols
// must include id: a contact's merged per-form scans and the payload windows are
// ordered by it.
func (f EventFilter) build(cols string, asc, windowed bool) (string, []any) {
	args := []any{f.Limit}
	add := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var where []string
	if f.State != "" {
		// Written into the SQL (one of four checked values): a generic plan for
		// "state = $n" could not use the partial index of dead events.
		where = append(where, "state = '"+f.State+"'")
	}
	if f.Provider != "" {
		where = append(where, provider.MatchSQL("provider", add(f.Provider)))
	}
	if f.ExternalID != "" {
		where = append(where, "external_id = "+add(f.ExternalID))
	}
	if f.HasError {
		where = append(where, "coalesce(last_error, '') = "+add(f.Error))
	}
	if !f.From.IsZero() {
		where = append(where, "id >= "+add(f.fromID), "received_at >= "+add(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "id < "+add(f.toID), "received_at < "+add(f.To))
	}
	if f.Before > 0 {
		where = append(where, "id < "+add(f.Before))
	}
	if f.After > 0 {
		where = append(where, "id > "+add(f.After))
	}
	payload := f.payloadConditions(add)
	if !windowed {
		where, payload = append(where, payload...), nil
	}
	order := " ORDER BY id DESC"
	if asc {
		order = " ORDER BY id"
	}
	if f.ExternalID != "" {
		order = "" // (provider, external_id) is unique: one row at most
	}
	limit := " LIMIT $1"
	inner := cols
	if len(payload) > 0 {
		limit, inner = " LIMIT "+add(SearchWindow), cols+", payload"
	}
	var sql string
	if len(f.Contacts) > 0 {
		// One ordered scan of (contact, id) per form, merged.
		where = append(where, "contact = f.contact")
		sql = "SELECT e.* FROM unnest(" + add(f.Contacts) + "::text[]) AS f(contact) CROSS JOIN LATERAL (SELECT " + inner +
			" FROM inbound_events WHERE " + strings.Join(where, " AND ") + order + limit + ") e" + order + limit
	} else {
		sql = "SELECT " + inner + " FROM inbound_events"
		if len(where) > 0 {
			sql += " WHERE " + strings.Join(where, " AND ")
		}
		sql += order + limit
	}
	if len(payload) == 0 {
		return sql, args
	}
	return "SELECT " + cols + " FROM (" + sql + ") w WHERE " + strings.Join(payload, " AND ") + order + " LIMIT $1", args
}

// payloadConditions are f's conditions on the payload's content.
func (f EventFilter) payloadConditions(add func(any) string) []string {
	var cond []string
	if f.Text != "" {
		cond = append(cond, "payload::text ILIKE "+add("%"+likeEscaper.Replace(f.Text)+"%"))
	}
	if f.Path != "" {
		cond = append(cond, "payload @? "+add(f.Path)+"::text::jsonpath")
	}
	return cond
}

// likeEscaper makes text match itself in LIKE.
var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// ListEvents lists the events f selects, newest first, without payloads. It takes
// no time range or payload conditions (SearchEvents does).
func ListEvents(ctx context.Context, pool *pgxpool.Pool, f EventFilter) ([]Event, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f.HasPayloadConditions() || !f.From.IsZero() || !f.To.IsZero() {
		return nil, fmt.Errorf("%w: ListEvents takes no time range or payload conditions; use SearchEvents", ErrBadFilter)
	}
	sql, args := f.query(eventColumns, false)
	return list(ctx, pool, "list events", pgx.RowToStructByNameLax[Event], sql, args...)
}

// SearchPage is a page of SearchEvents.
type SearchPage struct {
	Events []Event
	// Next is the Before of the next page; 0 on the last.
	Next int64
	// Windowed: the payload conditions were applied to a window of SearchWindow
	// events that ended at Next without filling the page: the next page searches on.
	Windowed bool
}

// SearchEvents lists a page of the events f selects, newest first, without payloads.
func SearchEvents(ctx context.Context, pool *pgxpool.Pool, f EventFilter) (SearchPage, error) {
	if !f.resolved {
		if err := f.Resolve(ctx, pool); err != nil {
			return SearchPage{}, err
		}
	}
	sql, args := f.query(eventColumns, false)
	evs, err := list(ctx, pool, "search events", pgx.RowToStructByNameLax[Event], sql, args...)
	if err != nil {
		return SearchPage{}, err
	}
	page := SearchPage{Events: evs}
	if len(evs) == f.Limit {
		page.Next = evs[len(evs)-1].ID
		return page, nil
	}
	if !f.HasPayloadConditions() {
		return page, nil
	}
	// The page is short: either nothing more matches, or the window ended first.
	n, last, err := window(ctx, pool, f, false)
	if err != nil {
		return SearchPage{}, fmt.Errorf("search events: %w", err)
	}
	if n == SearchWindow {
		page.Next, page.Windowed = last, true
	}
	return page, nil
}

// window reads the window f's payload conditions were applied to: how many events it
// holds (SearchWindow when it was full) and the id where it ends (0 when empty),
// newest first or, with asc, oldest first.
func window(ctx context.Context, pool *pgxpool.Pool, f EventFilter, asc bool) (n, end int64, err error) {
	f.Text, f.Path = "", ""
	sql, args := f.query("id", asc)
	args[0] = SearchWindow
	edge := "min"
	if asc {
		edge = "max"
	}
	err = pool.QueryRow(ctx, "SELECT count(*), coalesce("+edge+"(id), 0) FROM ("+sql+") w", args...).Scan(&n, &end)
	return n, end, err
}

// Candidates returns up to f.Limit ids, and each one's contact, of the events f
// selects in id order after f.After: a bulk replay's next batch. With payload
// conditions, scanned is the last id of the window they were applied to (the next
// call goes on from there); otherwise it is the last id returned.
func Candidates(ctx context.Context, pool *pgxpool.Pool, f EventFilter) (ids []int64, contacts []*string, scanned int64, err error) {
	if !f.resolved {
		if err := f.Resolve(ctx, pool); err != nil {
			return nil, nil, 0, err
		}
	}
	sql, args := f.query("id, contact", true)
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("select events to replay: %w", err)
	}
	var id int64
	var contact *string
	_, err = pgx.ForEachRow(rows, []any{&id, &contact}, func() error {
		ids, contacts = append(ids, id), append(contacts, contact)
		return nil
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("select events to replay: %w", err)
	}
	if len(ids) > 0 {
		scanned = ids[len(ids)-1]
	}
	if f.HasPayloadConditions() && len(ids) < f.Limit {
		_, last, err := window(ctx, pool, f, true)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("select events to replay: %w", err)
		}
		scanned = max(scanned, last)
	}
	return ids, contacts, scanned, nil
}

// countTimeout bounds Matching's count: an unindexed payload condition over a long
// history could otherwise read every event. A variable so that a test can reach it.
var countTimeout = 5 * time.Second

// ErrTooSlow: counting the events a filter matches took longer than countTimeout.
var ErrTooSlow = errors.New("counting took too long")

// Matching is what a bulk replay's confirmation shows: the newest event id now
// (upTo: the replay covers events up to it, not those that arrive later), how many
// events f selects up to it (counting stops past most), and the oldest few of them.
func Matching(ctx context.Context, pool *pgxpool.Pool, f EventFilter, most int64, sample int) (upTo, count int64, oldest []Event, err error) {
	f.Limit = sample
	if err := f.Resolve(ctx, pool); err != nil {
		return 0, 0, nil, err
	}
	if err := pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM inbound_events`).Scan(&upTo); err != nil {
		return 0, 0, nil, fmt.Errorf("count matching events: %w", err)
	}
	f.Before = upTo + 1
	c := f
	c.Limit = int(most + 1)
	sql, args := c.build("id", true, false)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL statement_timeout = %d", countTimeout.Milliseconds())); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT count(*) FROM ("+sql+") m", args...).Scan(&count)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "57014" { // query_canceled: the statement timeout
		return 0, 0, nil, fmt.Errorf("%w: counting what this filter matches took over %s (its text or JSON path is read from every event the other conditions select): narrow it with a time range or a provider", ErrTooSlow, countTimeout)
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("count matching events: %w", err)
	}
	s := f
	s.Limit = sample
	sql, args = s.build(eventColumns, true, false)
	oldest, err = list(ctx, pool, "sample matching events", pgx.RowToStructByNameLax[Event], sql, args...)
	return upTo, count, oldest, err
}

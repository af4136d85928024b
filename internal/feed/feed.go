// Package feed serves the change feed (docs/consumers.md): the changes the processor
// writes in the transaction that applies each event (migration 012), read in an order
// that never skips one, as pages (GET /v1/changes, with long polling) or as a stream
// of server-sent events.
//
// # Why a follower never misses a change
//
// A change's seq comes from a sequence when it is inserted, but becomes visible when
// its transaction commits, so a reader that has seen seq 1001 may later find a 1000
// that committed late; "seq > cursor" would skip it. Instead each change records the
// id of the transaction that wrote it (xid), and a read returns only changes whose xid
// is below the xmin of the read's own snapshot, in (xid, seq) order, after the cursor
// (the (xid, seq) of the last change returned). The proof:
//
//  1. Every transaction with an xid below xmin has ended (that is what xmin is), so
//     the set of changes with xid < xmin is final: none can be added to it later, and
//     the read sees all of it (the committed ones are in its snapshot, the aborted
//     ones never will be).
//  2. Xmin never goes backwards between a follower's reads (a later snapshot's xmin
//     is at least an earlier one's), and the read returns that final set in (xid, seq)
//     order from the cursor on.
//  3. So when a read returns a change (x, s), every change with a smaller (xid, seq)
//     was already final and was returned by this or an earlier read; the next read
//     starts after (x, s) and cannot meet an older one. No change is skipped, and none
//     is returned twice.
//
// The price: a change is held back while any transaction that took its xid earlier
// is still running, anywhere on the server (a long transaction delays the feed,
// never loses a change). TestOutOfOrderCommits commits two overlapping
// transactions in the "wrong" order and fails if the read is replaced by seq >
// cursor.
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/processor"
	"inboxd/internal/readmodel"
	"inboxd/internal/store"
)

// Channel is what processes notify on after committing changes
// (processor.ChangesChannel).
const Channel = processor.ChangesChannel

// Types are the change types.
var Types = []string{"conversation.created", "message.created", "message.status_changed", ContactErased}

// ContactErased is the type of the change an erasure writes per conversation: the
// only type that carries none of a contact's data.
const ContactErased = "contact.erased"

// Cursor is a position in the feed: the (xid, seq) of the last change read. The zero
// Cursor is the beginning of what is kept.
type Cursor struct {
	XID uint64
	Seq int64
}

// String is the cursor as clients see it, which is also the change's id.
func (c Cursor) String() string { return fmt.Sprintf("%d.%d", c.XID, c.Seq) }

// ErrBadCursor: a cursor this service did not hand out.
var ErrBadCursor = errors.New("bad cursor")

// ParseCursor reads a cursor or change id ("" is the beginning).
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	x, q, ok := strings.Cut(s, ".")
	xid, err1 := strconv.ParseUint(x, 10, 64)
	seq, err2 := strconv.ParseInt(q, 10, 64)
	if !ok || err1 != nil || err2 != nil || seq < 0 {
		return Cursor{}, fmt.Errorf("%w: not a change id (such as 10402.4) or a cursor this API returned", ErrBadCursor)
	}
	return Cursor{XID: xid, Seq: seq}, nil
}

// ErrCursorExpired: retention deleted changes after the cursor (it is before the
// feed's horizon, migration 022), so a follower there may have missed some.
var ErrCursorExpired = errors.New("cursor expired")

// Before reports whether c comes before o in feed order.
func (c Cursor) Before(o Cursor) bool {
	return c.XID < o.XID || c.XID == o.XID && c.Seq < o.Seq
}

// bounds reads the horizon, the last change retention deleted (changes_horizon,
// migration 022; 0.0 while it has deleted none), and the next transaction id the
// server will assign: no change can have a larger xid.
const bounds = `
SELECT COALESCE(h.xid::text::bigint, 0), COALESCE(h.seq, 0), pg_snapshot_xmax(pg_current_snapshot())::text::bigint
FROM (SELECT 1) one LEFT JOIN changes_horizon h ON true`

// Start is where a follower's read begins: after the cursor it gave (given), or,
// without one, at the horizon (a change kept past the retention for a subscription's
// sake, internal/processor, may be older: a follower that started there would be told
// at once that its cursor expired). A cursor the feed cannot continue from is refused
// (ErrCursorExpired): one before the horizon, since the changes that retention deleted
// after it are gone and a follower resuming there would skip them without knowing;
// and one ahead of every transaction the server has run, from a database since
// restored to an earlier point or replaced, after which every new change would sort
// before it and never be read.
func Start(ctx context.Context, pool *pgxpool.Pool, c Cursor, given bool) (Cursor, error) {
	h, next, err := readBounds(ctx, pool)
	if err != nil {
		return Cursor{}, err
	}
	const resync = "rebuild what you keep from the API (GET /v1/conversations), then follow the feed again without a cursor"
	switch {
	case !given:
		return h, nil
	case c.Before(h):
		return Cursor{}, fmt.Errorf("%w: retention (INBOX_RETENTION) deleted changes after %s, up to %s, and some may not have been read; %s",
			ErrCursorExpired, c, h, resync)
	case c.XID >= next:
		return Cursor{}, fmt.Errorf("%w: %s is ahead of this database's change feed, which has not reached transaction %d: the database was restored to an earlier point or replaced; %s",
			ErrCursorExpired, c, next, resync)
	}
	return c, nil
}

// readBounds reads the horizon and the next transaction id (bounds).
func readBounds(ctx context.Context, pool *pgxpool.Pool) (h Cursor, next uint64, err error) {
	var hxid, nxid int64
	if err := pool.QueryRow(ctx, bounds).Scan(&hxid, &h.Seq, &nxid); err != nil {
		return Cursor{}, 0, fmt.Errorf("read the change feed's horizon: %w", err)
	}
	h.XID = uint64(hxid)
	return h, uint64(nxid), nil
}

// Kept reports whether the change c is still in the feed's reach: after the
// horizon, the last change retention deleted. (A change before it that a
// subscription kept is not: the feed does not serve it.) ErrCursorExpired says why
// when it is not.
func Kept(ctx context.Context, pool *pgxpool.Pool, c Cursor) error {
	h, _, err := readBounds(ctx, pool)
	if err != nil {
		return err
	}
	if h != (Cursor{}) && !h.Before(c) {
		return fmt.Errorf("%w: retention (INBOX_RETENTION) has deleted change %s (it deleted every change up to %s)", ErrCursorExpired, c, h)
	}
	return nil
}

// ErrForeignTransactionIDs: the feed holds transaction ids this server has not
// reached (CheckTransactionIDs).
var ErrForeignTransactionIDs = errors.New("the change feed holds transaction ids ahead of this server's")

// highestXID reads the highest transaction id the feed holds (its changes, the
// subscriptions' positions, the horizon; NULL when none) and the next one this server
// will assign.
const highestXID = `
SELECT GREATEST((SELECT xid FROM changes ORDER BY xid DESC LIMIT 1),
                (SELECT max(cursor_xid) FROM subscriptions),
                (SELECT xid FROM changes_horizon))::text::bigint,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint`

// CheckTransactionIDs reports ErrForeignTransactionIDs when the feed holds a
// transaction id the server has not reached. The feed is ordered by the ids of the
// transactions that wrote it, so its data must come from this server's history; a
// copy restored into another cluster (pg_dump and pg_restore, or a promoted logical
// replica) carries the old cluster's ids, and the new one's are smaller. Every new
// change would then sort before the stored ones, below every follower's and
// subscription's position, and none would ever be read or delivered, without an
// error anywhere. The fix is the server's (its transaction id epoch), so the service
// only says so, loudly; ingest and processing are not affected.
func CheckTransactionIDs(ctx context.Context, pool *pgxpool.Pool) error {
	var highest *int64
	var next int64
	if err := pool.QueryRow(ctx, highestXID).Scan(&highest, &next); err != nil {
		return fmt.Errorf("read the change feed's transaction ids: %w", err)
	}
	if highest == nil || *highest < next {
		return nil
	}
	return fmt.Errorf("%w: it holds %d, and this server's next is %d: its data came from another cluster (a pg_dump restore, or a promoted logical replica), "+
		"so new changes would sort before the stored ones and no follower or subscription would see them. "+
		"Stop Postgres and run `pg_resetwal -e %d -D <its data directory>`, which moves this server's transaction ids past them, then start it again (docs/operations.md)",
		ErrForeignTransactionIDs, *highest, next, *highest>>32+1)
}

// Change is one change as consumers see it.
type Change struct {
	ID             string          `json:"id"`
	Type           string          `json:"type"`
	OccurredAt     time.Time       `json:"occurred_at"`
	ConversationID int64           `json:"conversation_id"`
	Data           json.RawMessage `json:"data"`
	cursor         Cursor
}

// Cursor is the change's position.
func (c Change) Cursor() Cursor { return c.cursor }

// final selects the final changes after the cursor ($1, $2), up to $3, in feed order
// (see the package comment). The watermark is a subquery, computed once from the
// statement's own snapshot.
const final = `
FROM changes c
WHERE c.xid < (SELECT pg_snapshot_xmin(pg_current_snapshot()))
  AND (c.xid, c.seq) > ($1::text::xid8, $2::bigint)
ORDER BY c.xid, c.seq
LIMIT $3`

// Object is the SQL expression of the object a change (a row of changes named c)
// carries, as stored: its copy in data, or, for a message's change (migration 018),
// the message with the status, status_at and error the change recorded. A message's
// other fields never change, and erasure deletes a message's changes in the
// transaction that deletes it, so this is the object a copy would have held. NULL only
// if that were broken (render then says so).
const Object = `COALESCE(c.data, (
    SELECT to_jsonb(m) - 'inbound_event_id'
           || jsonb_build_object('status', c.status, 'status_at', c.status_at, 'error', c.error)
    FROM messages m WHERE m.id = c.message_id))`

// read returns the final changes after the cursor.
const read = `SELECT c.xid::text::bigint, c.seq, c.type, c.occurred_at, c.conversation_id, ` + Object + final

// readPlan are the settings a read is planned with (as the processor's statements
// are, processor.TxSettings): the changes are walked by their primary key and each
// change's message is looked up by its id, whatever the statistics say. Planned
// while the tables look nearly empty (a new database, the first minutes after a
// deployment), a read would otherwise sort a sequential scan of changes and scan
// messages once per change, and a connection keeps that plan while the tables grow
// (TestReadPlans).
var readPlan = []string{"enable_seqscan", "off", "jit", "off"}

// Read returns up to limit changes after c, oldest first.
func Read(ctx context.Context, pool *pgxpool.Pool, c Cursor, limit int) ([]Change, error) {
	var out []Change
	b := &pgx.Batch{}
	b.Queue(store.SetLocal(readPlan...)) // one round trip, one implicit transaction
	queueRead(b, c, limit, &out)
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("read changes: %w", err)
	}
	return out, nil
}

// queueRead queues the read of up to limit changes after c into out.
func queueRead(b *pgx.Batch, c Cursor, limit int, out *[]Change) {
	b.Queue(read, strconv.FormatUint(c.XID, 10), c.Seq, limit).Query(func(rows pgx.Rows) error {
		var err error
		*out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Change, error) {
			var xid, seq, conversation int64
			var typ string
			var at time.Time
			var data []byte
			if err := row.Scan(&xid, &seq, &typ, &at, &conversation, &data); err != nil {
				return Change{}, err
			}
			return NewChange(Cursor{XID: uint64(xid), Seq: seq}, typ, at, conversation, data)
		})
		return err
	})
}

// NewChange makes a change as consumers see it from a row of the changes table (its
// data as stored): the feed's pages and the outbound deliveries (internal/delivery)
// send the same object.
func NewChange(c Cursor, typ string, occurredAt time.Time, conversationID int64, data []byte) (Change, error) {
	rendered, err := render(typ, data)
	if err != nil {
		return Change{}, fmt.Errorf("change %s: %w", c, err)
	}
	return Change{ID: c.String(), Type: typ, OccurredAt: occurredAt, ConversationID: conversationID, Data: rendered, cursor: c}, nil
}

// positions is read without the objects: where each change is and what it is about.
const positions = `SELECT c.xid::text::bigint, c.seq, c.type, c.conversation_id` + final

// Position is a change without its object.
type Position struct {
	Cursor         Cursor
	Type           string
	ConversationID int64
}

// Querier is a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Positions returns up to limit changes after c in feed order, like Read, without
// their objects: for outbound deliveries' fan-out (internal/delivery), which reads in
// its own transaction.
func Positions(ctx context.Context, q Querier, c Cursor, limit int) ([]Position, error) {
	rows, err := q.Query(ctx, positions, strconv.FormatUint(c.XID, 10), c.Seq, limit)
	if err != nil {
		return nil, fmt.Errorf("read change positions: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Position, error) {
		var p Position
		var xid int64
		err := row.Scan(&xid, &p.Cursor.Seq, &p.Type, &p.ConversationID)
		p.Cursor.XID = uint64(xid)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read change positions: %w", err)
	}
	return out, nil
}

// render gives a change's object the shape the API serves (the read model's types,
// with their redaction marks).
func render(typ string, data json.RawMessage) (json.RawMessage, error) {
	if data == nil {
		return nil, errors.New("its object is gone (a message deleted without its changes)")
	}
	switch typ {
	case "conversation.created":
		var c readmodel.Conversation
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, err
		}
		c.MarkRedacted()
		return json.Marshal(c)
	case "message.created", "message.status_changed":
		var m readmodel.Message
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, err
		}
		m.MarkRedacted()
		return json.Marshal(m)
	}
	return data, nil
}

// heldBack reports whether committed changes after the cursor wait for the
// watermark: a transaction that took its xid earlier is still running.
const heldBack = `
SELECT EXISTS (SELECT FROM changes
               WHERE xid >= (SELECT pg_snapshot_xmin(pg_current_snapshot()))
                 AND (xid, seq) > ($1::text::xid8, $2::bigint))`

// Wait reads changes after c like Read; when there are none, it waits up to wait for
// some, reading again each time hub says changes were committed. When committed
// changes are held back by the watermark (see the package comment), the transaction
// holding them back may end without a notification, so it reads again after 5 ms,
// then twice as long each time, up to a second (the hub's recheck); otherwise at
// least every second.
//
// Each round asks the hub for its next notification, then, in one round trip,
// whether changes are held back and then what there is to read, in that order. If
// none were held back, every change committed before the check was final and so is
// in the read; one committed since is announced by a notification that comes after
// the hub was asked. Checked after the read instead, a holder that ended between the
// two would leave a change unread and not held back, with nothing to wake the reader
// before the recheck (TestWaitSeesAHolderEndDuringItsRead).
func Wait(ctx context.Context, pool *pgxpool.Pool, hub *Hub, c Cursor, limit int, wait time.Duration) ([]Change, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	backoff := 5 * time.Millisecond
	for {
		next := hub.Next() // before the read: a commit during it is not missed
		var changes []Change
		var held bool
		b := &pgx.Batch{}
		b.Queue(store.SetLocal(readPlan...))
		b.Queue(heldBack, strconv.FormatUint(c.XID, 10), c.Seq).QueryRow(func(row pgx.Row) error { return row.Scan(&held) })
		queueRead(b, c, limit, &changes)
		if err := pool.SendBatch(ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("read changes: %w", err)
		}
		if len(changes) > 0 {
			return changes, nil
		}
		again := hub.recheck
		if held {
			again, backoff = backoff, min(2*backoff, hub.recheck)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, nil
		case <-next:
		case <-time.After(again):
		}
	}
}

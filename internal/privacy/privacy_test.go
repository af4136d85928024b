package privacy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"inboxd/internal/feed"
	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
	"inboxd/internal/redact"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const (
	alice   = "+15552223333"
	bob     = "+15559998888"
	channel = "+15550001111"
)

// startProcessor runs a processor on url until the test ends.
func startProcessor(t *testing.T, url string) {
	t.Helper()
	t.Cleanup(runProcessor(t, url))
}

// runProcessor runs a processor on url until stop is called.
func runProcessor(t *testing.T, url string) (stop func()) {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	p := processor.New(pool, url, processor.Config{SweepInterval: 50 * time.Millisecond, BatchSize: 20},
		zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), processor.NewMetrics(prometheus.NewRegistry()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
		pool.Close()
	}
}

var seq atomic.Int64

// insert stores generic events as ingest would, each payload a JSON object.
func insert(t testing.TB, pool *pgxpool.Pool, payloads ...string) []string {
	t.Helper()
	ids, err := store(pool, payloads...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func store(pool *pgxpool.Pool, payloads ...string) ([]string, error) {
	ids := make([]string, len(payloads))
	for i := range payloads {
		ids[i] = fmt.Sprintf("evt-%d", seq.Add(1))
	}
	_, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT 'generic', id, payload::jsonb FROM unnest($1::text[], $2::text[]) AS t(id, payload)`, ids, payloads)
	if err != nil {
		return nil, fmt.Errorf("insert events: %w", err)
	}
	return ids, nil
}

func message(kind, id, contact, text string) string {
	return fmt.Sprintf(`{"type":%q,"timestamp":%q,"data":{"message_id":%q,"channel":%q,"contact":%q,"text":%q}}`,
		kind, time.Now().UTC().Format(time.RFC3339Nano), id, channel, contact, text)
}

func status(id, contact, st string) string {
	return fmt.Sprintf(`{"type":"message.status","timestamp":%q,"data":{"message_id":%q,"contact":%q,"status":%q}}`,
		time.Now().UTC().Format(time.RFC3339Nano), id, contact, st)
}

// settle waits until no event waits or is being processed.
func settle(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	pgtest.Eventually(t, "every event processed", time.Minute, func() (bool, error) {
		var n int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM inbound_events WHERE state IN ('pending', 'processing')`).Scan(&n)
		return n == 0, err
	})
}

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// leftAbout counts the rows anywhere that hold address or text.
func leftAbout(t *testing.T, pool *pgxpool.Pool, needles ...string) int {
	t.Helper()
	n := 0
	for _, s := range needles {
		n += count(t, pool, `SELECT
  (SELECT count(*) FROM inbound_events WHERE payload::text LIKE '%' || $1 || '%' OR contact = $1)
+ (SELECT count(*) FROM conversations WHERE contact_address = $1)
+ (SELECT count(*) FROM messages WHERE concat(sender, recipient, text) LIKE '%' || $1 || '%')
+ (SELECT count(*) FROM pending_statuses p JOIN inbound_events e ON e.id = p.inbound_event_id WHERE e.payload::text LIKE '%' || $1 || '%')
+ (SELECT count(*) FROM erasures WHERE contact = $1)`, s)
	}
	return n
}

// runErasure starts an erasure of address and runs it to the end.
func runErasure(t *testing.T, e *Eraser, address, prov string) Receipt {
	t.Helper()
	ctx := context.Background()
	s, err := e.Subject(address, prov)
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if ran, err := e.RunNext(ctx); !ran || err != nil {
		t.Fatalf("RunNext = %v, %v; want the erasure run", ran, err)
	}
	r, err = e.Find(ctx, r.ID)
	if err != nil || r.State != "done" || r.FinishedAt == nil {
		t.Fatalf("receipt = %+v, %v; want done", r, err)
	}
	return r
}

// aliceSaidOneThing is a database, with a processor running on it, that holds one
// processed message from alice ("alice's secret").
func aliceSaidOneThing(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, url := pgtest.NewPool(t)
	startProcessor(t, url)
	insert(t, pool, message("message.received", "a1", alice, "alice's secret"))
	settle(t, pool)
	return pool
}

// heldErasure starts an erasure of alice by an Eraser "a" and gives its lease, for an
// hour, to holder.
func heldErasure(t *testing.T, pool *pgxpool.Pool, holder string) (*Eraser, Subject, Receipt) {
	t.Helper()
	ctx := context.Background()
	e := NewEraser(pool, zaptest.NewLogger(t), nil, "a")
	s, err := e.Subject(alice, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE erasures SET locked_by = $2, locked_until = now() + interval '1 hour' WHERE id = $1`, r.ID, holder); err != nil {
		t.Fatal(err)
	}
	return e, s, r
}

// TestLostLeaseChangesNothing: a runner whose erasure another process has taken over
// (its lease ran out while it stalled) has its batch refused whole: nothing is
// erased twice over or counted twice in the receipt.
func TestLostLeaseChangesNothing(t *testing.T) {
	t.Parallel()
	pool := aliceSaidOneThing(t)
	ctx := context.Background()
	e, s, r := heldErasure(t, pool, "b")
	select {
	case <-e.wake:
	default:
		t.Error("Start did not wake this process's runner")
	}
	if _, _, err := e.step(ctx, r.ID, s); err == nil || !strings.Contains(err.Error(), "lost the lease") {
		t.Errorf("a's step after b took the erasure over: %v, want lost the lease", err)
	}
	if n := leftAbout(t, pool, alice, "alice's secret"); n == 0 {
		t.Error("a's refused step erased alice's data")
	}
	if r, err := e.Find(ctx, r.ID); err != nil || r.Counts != (Counts{}) {
		t.Errorf("receipt after a's refused step: %+v (%v), want nothing counted", r.Counts, err)
	}
	// While b's lease lasts, no runner claims the erasure.
	if ran, err := e.RunNext(ctx); ran || err != nil {
		t.Errorf("RunNext while b holds the only erasure = %v, %v; want nothing claimed", ran, err)
	}
	// Once it ends, the oldest running erasure is resumed first.
	later, err := e.Start(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE erasures SET locked_until = now() - interval '1 second' WHERE id = $1`, r.ID); err != nil {
		t.Fatal(err)
	}
	if ran, err := e.RunNext(ctx); !ran || err != nil {
		t.Fatalf("RunNext after b's lease ended = %v, %v; want an erasure run", ran, err)
	}
	first, _ := e.Find(ctx, r.ID)
	second, _ := e.Find(ctx, later.ID)
	if first.State != "done" || second.State != "running" {
		t.Errorf("after one run: the older erasure %s, the newer %s; want the older done first", first.State, second.State)
	}
}

// TestEraseStepTakesTheContactLock: an erasure's batch waits for the contact's lock,
// which the processor's apply holds while it stores the contact's message, so that no
// message lands in a conversation the batch deletes (TestEraseUnderStream shows what
// that loses, when the race falls that way).
func TestEraseStepTakesTheContactLock(t *testing.T) {
	t.Parallel()
	pool := aliceSaidOneThing(t)
	ctx := context.Background()
	e, s, r := heldErasure(t, pool, "a")
	pgtest.LineUp(t, pool, func(tx pgx.Tx) error { return processor.LockContacts(ctx, tx, s.Forms) }, true,
		func() error { _, _, err := e.step(ctx, r.ID, s); return err })
	if n := leftAbout(t, pool, alice, "alice's secret"); n != 0 {
		t.Errorf("%d rows still hold alice's data after the step", n)
	}
}

// TestEraseTakesWaitingEvents: an event of the contact waiting for a retry (its
// contact read by the attempt that failed) is erased with the rest and leaves the
// queue, so that it is never applied after the erasure; the dry run counts it and
// the export lists it before. An event no processor has read is unknown to the
// erasure and kept whole (docs/privacy.md says so).
func TestEraseTakesWaitingEvents(t *testing.T) {
	t.Parallel()
	pool := aliceSaidOneThing(t)
	ctx := context.Background()
	var waiting, unread int64
	if err := pool.QueryRow(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, run_at, contact)
VALUES ('generic', 'evt-retry', $1::jsonb, 'pending', 1, now() + interval '1 hour', $2)
RETURNING id`, message("message.received", "a2", alice, "alice's later words"), alice).Scan(&waiting); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, run_at)
VALUES ('generic', 'evt-unread', $1::jsonb, now() + interval '1 hour')
RETURNING id`, message("message.received", "a3", alice, "alice's unread words")).Scan(&unread); err != nil {
		t.Fatal(err)
	}
	e := NewEraser(pool, zaptest.NewLogger(t), nil, "test")
	s, _ := e.Subject(alice, "")
	var exported bytes.Buffer
	if _, err := Export(ctx, pool, s, &exported); err != nil || !strings.Contains(exported.String(), "alice's later words") {
		t.Errorf("the export (%v) leaves out the waiting event: %s", err, exported.String())
	}
	if c, err := DryRun(ctx, pool, s); err != nil || c.Events != 2 {
		t.Errorf("dry run counts %d events (%v), want 2: the processed one and the waiting one", c.Events, err)
	}
	r := runErasure(t, e, alice, "")
	if r.Counts.Events != 2 {
		t.Errorf("the receipt counts %d events, want 2", r.Counts.Events)
	}
	var payload, state string
	var erased bool
	if err := pool.QueryRow(ctx, `SELECT payload::text, state, erased_at IS NOT NULL FROM inbound_events WHERE id = $1`, waiting).Scan(&payload, &state, &erased); err != nil {
		t.Fatal(err)
	}
	if !erased || payload != "{}" || state != "processed" {
		t.Errorf("the waiting event after the erasure: erased %v, state %s, payload %s; want an erased tombstone out of the queue", erased, state, payload)
	}
	if err := pool.QueryRow(ctx, `SELECT payload::text, state, erased_at IS NOT NULL FROM inbound_events WHERE id = $1`, unread).Scan(&payload, &state, &erased); err != nil {
		t.Fatal(err)
	}
	if erased || state != "pending" || !strings.Contains(payload, "alice's unread words") {
		t.Errorf("the unread event after the erasure: erased %v, state %s, payload %s; want it kept whole", erased, state, payload)
	}
}

// aliceWasReplayed is a database with no processor running that holds alice's
// message ("alice's secret"), processed, and its event requeued as a replay leaves it.
func aliceWasReplayed(t *testing.T) (*pgxpool.Pool, string) {
	t.Helper()
	ctx := context.Background()
	pool, url := pgtest.NewPool(t)
	stop := runProcessor(t, url)
	insert(t, pool, message("message.received", "a1", alice, "alice's secret"))
	settle(t, pool)
	stop()
	var ids []int64
	if err := pool.QueryRow(ctx, `SELECT array_agg(id) FROM inbound_events`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if n, err := processor.Requeue(ctx, pool, ids); err != nil || n != 1 {
		t.Fatalf("Requeue = %d, %v; want alice's event requeued", n, err)
	}
	return pool, url
}

// holdAll puts every event in a processor's hands: processing, held by holder for
// lease from now (an interval; a negative one has run out).
func holdAll(t *testing.T, pool *pgxpool.Pool, holder, lease string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `
UPDATE inbound_events
SET state = 'processing', attempts = GREATEST(attempts, 1), locked_by = $1,
    run_at = now() + $2::interval, locked_until = now() + $2::interval`, holder, lease); err != nil {
		t.Fatal(err)
	}
}

// nothingComesBack starts a processor on url, lets it process whatever is left, and
// checks that no row holds any of needles.
func nothingComesBack(t *testing.T, pool *pgxpool.Pool, url string, needles ...string) {
	t.Helper()
	startProcessor(t, url)
	settle(t, pool)
	if n := leftAbout(t, pool, needles...); n != 0 {
		t.Errorf("%d rows hold alice's data after her erasure, once the processor ran", n)
	}
}

// TestEraseOutlastsAReplay: a replay that requeued the contact's events before the
// erasure does not bring their messages back after it.
func TestEraseOutlastsAReplay(t *testing.T) {
	t.Parallel()
	pool, url := aliceWasReplayed(t)
	r := runErasure(t, NewEraser(pool, zaptest.NewLogger(t), nil, "test"), alice, "")
	if r.Counts.Messages != 1 || r.Counts.Events != 1 {
		t.Errorf("receipt counts = %+v, want alice's message and its event", r.Counts)
	}
	nothingComesBack(t, pool, url, alice, "alice's secret")
}

// TestEraseWaitsForEventsInHand: the erasure does not end while a processor holds
// one of the contact's events it read before (here a replayed one, claimed by a
// process that stalls), and a later batch erases what that event's apply brings back.
func TestEraseWaitsForEventsInHand(t *testing.T) {
	t.Parallel()
	pool, url := aliceWasReplayed(t)
	ctx := context.Background()
	holdAll(t, pool, "stalled", "1 hour")
	e, s, r := heldErasure(t, pool, "a")
	if _, done, err := e.step(ctx, r.ID, s); err != nil || done {
		t.Fatalf("a step while alice's event is in a processor's hands = done %v, %v; want more to come", done, err)
	}
	// The holder's lease runs out; a processor rescues the event and applies it (its
	// message comes back) before the erasure's next batch.
	holdAll(t, pool, "stalled", "0 seconds")
	startProcessor(t, url)
	settle(t, pool)
	if n := count(t, pool, `SELECT count(*) FROM messages`); n != 1 {
		t.Fatalf("%d messages after the rescue, want alice's back", n)
	}
	if err := e.run(ctx, r.ID, s); err != nil {
		t.Fatal(err)
	}
	if n := leftAbout(t, pool, alice, "alice's secret"); n != 0 {
		t.Errorf("%d rows hold alice's data after her erasure", n)
	}
}

// TestEraseGoesOnBesideAnEventInHand: an event of the contact in a processor's hands
// does not hold up the others: a batch erases them beside it, even one the size of a
// single event that meets the held one first, and only then waits for that one.
func TestEraseGoesOnBesideAnEventInHand(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	// Two retries of alice's never applied (so no message leads to them; their
	// contact was recorded at the failed attempt), the first in a processor's hands.
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, contact, run_at, locked_until, locked_by)
VALUES ('generic', 'held', '{"text": "alice''s secret"}', 'processing', 1, $1, now() + interval '1 hour', now() + interval '1 hour', 'stalled'),
       ('generic', 'waiting', '{"text": "alice''s secret"}', 'pending', 1, $1, now() + interval '1 minute', NULL, NULL)`, alice); err != nil {
		t.Fatal(err)
	}
	e, s, r := heldErasure(t, pool, "a")
	e.Batch = 1
	if _, done, err := e.step(ctx, r.ID, s); err != nil || done {
		t.Fatalf("a step while one of alice's events is in a processor's hands = done %v, %v; want more to come", done, err)
	}
	erased := func(id string) bool {
		return count(t, pool, `SELECT count(*) FROM inbound_events WHERE external_id = $1 AND erased_at IS NOT NULL`, id) == 1
	}
	if erased("held") || !erased("waiting") {
		t.Errorf("after one batch: held erased %v, waiting erased %v; want only the waiting one", erased("held"), erased("waiting"))
	}
}

// TestEraseSaysItWaits: an erasure whose contact has an event in a processor's hands
// waits for it, batch after batch, and says so in its log once; when the holder's
// lease runs out, it erases the event and ends.
func TestEraseSaysItWaits(t *testing.T) {
	t.Parallel()
	pool, url := aliceWasReplayed(t)
	holdAll(t, pool, "stalled", "1 hour")
	e, s, r := heldErasure(t, pool, "a")
	core, logs := observer.New(zap.InfoLevel)
	e.log = zap.New(core)
	done := make(chan error, 1)
	go func() { done <- e.run(context.Background(), r.ID, s) }()
	waiting := func() int { return logs.FilterMessage("erasure waits for the contact's events being processed").Len() }
	pgtest.Eventually(t, "the erasure says it waits", time.Minute, func() (bool, error) { return waiting() > 0, nil })
	time.Sleep(5 * inHandPoll) // batches go on while it waits
	holdAll(t, pool, "stalled", "-1 second")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the erasure did not end once the holder's lease ran out")
	}
	if n := waiting(); n != 1 {
		t.Errorf("the erasure said %d times that it waits, want once", n)
	}
	nothingComesBack(t, pool, url, alice, "alice's secret")
}

// TestEraseTakesWhatACrashLeft: events of the contact left processing by a process
// that died (their lease run out) are nobody's: an erasure run while no processor
// runs (`inboxd erase` during an outage) takes them and ends, and a processor started
// afterwards brings nothing back. One is a replayed event whose message the erasure
// deletes; the other, a retry never applied, has no message to be found by.
func TestEraseTakesWhatACrashLeft(t *testing.T) {
	t.Parallel()
	pool, url := aliceWasReplayed(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, attempts, contact)
VALUES ('generic', 'evt-retry', $1::jsonb, 'pending', 1, $2)`, message("message.received", "a2", alice, "alice's later words"), alice); err != nil {
		t.Fatal(err)
	}
	holdAll(t, pool, "died", "-1 second")
	e, s, r := heldErasure(t, pool, "a")
	// Bounded: an erasure that waits for the dead process's event would never end.
	bounded, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := e.run(bounded, r.ID, s); err != nil {
		t.Fatalf("erasure with alice's event left by a dead process: %v", err)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbound_events WHERE state <> 'processed' OR erased_at IS NULL OR processed_at IS NULL OR locked_by IS NOT NULL`); n != 0 {
		t.Errorf("%d of alice's events are not processed tombstones after her erasure", n)
	}
	nothingComesBack(t, pool, url, alice, "alice's secret", "alice's later words")
}

// TestEraseTakesEveryChange: an erasure is not done while its conversations have
// changes left, however many there are beyond one batch: a batch that erased fewer
// messages and events than it could, but a whole batch of changes, is not the last.
func TestEraseTakesEveryChange(t *testing.T) {
	t.Parallel()
	pool := aliceSaidOneThing(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO changes (type, conversation_id, data)
SELECT 'conversation.created', c.id, to_jsonb(c) FROM conversations c, generate_series(1, 3)`); err != nil {
		t.Fatal(err) // three more changes about alice's conversation
	}
	e := NewEraser(pool, zaptest.NewLogger(t), nil, "test")
	e.Batch = 1
	runErasure(t, e, alice, "")
	if n := count(t, pool, `SELECT count(*) FROM changes WHERE type <> 'contact.erased'`); n != 0 {
		t.Errorf("%d changes about alice left after her erasure", n)
	}
}

// TestEraseCountsEachEventOnce: a batch erases the contact's events in the order of
// their ids, and the events of the messages it deletes, in the messages' order, which
// may differ. An event erased in one batch whose message goes in a later one is not
// erased, or counted, again. Here the messages are read by the time they were sent,
// which runs against their events' ids: the first batch deletes the message sent
// first (the last event's) and erases the first event as well, whose message goes in
// the last batch.
func TestEraseCountsEachEventOnce(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	startProcessor(t, url)
	at := time.Now().UTC()
	var payloads []string
	for i := range 3 { // the first stored, the last sent
		payloads = append(payloads, fmt.Sprintf(`{"type":"message.received","timestamp":%q,"data":{"message_id":"m%d","channel":%q,"contact":%q,"text":"hi"}}`,
			at.Add(-time.Duration(i)*time.Minute).Format(time.RFC3339Nano), i, channel, alice))
	}
	insert(t, pool, payloads...)
	settle(t, pool)
	// Read by index, so that the orders are as described whatever the statistics.
	e := NewEraser(pgtest.PlanPool(t, url, "enable_seqscan", "off", "enable_bitmapscan", "off"), zaptest.NewLogger(t), nil, "test")
	e.Batch = 1
	r := runErasure(t, e, alice, "")
	if r.Counts != (Counts{Conversations: 1, Messages: 3, Events: 3, Changes: 4}) {
		t.Errorf("receipt counts = %+v, want 3 events: each counted once", r.Counts)
	}
}

// TestEraseOneProvider: an erasure or an export named for a provider takes the
// contact's conversations of that provider and of its named senders (generic takes
// in generic:acme), and leaves those of other providers and senders alone.
func TestEraseOneProvider(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	startProcessor(t, url)
	ctx := context.Background()
	// The same sender format under three names: generic and two named senders,
	// stored under their names from the start (the processor is running).
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload)
SELECT provider, provider || '-1', payload::jsonb FROM unnest($1::text[], $2::text[]) AS t(provider, payload)`,
		[]string{"generic", "generic:acme", "generic:zeta"},
		[]string{message("message.received", "g1", alice, "said through generic"),
			message("message.received", "a1", alice, "said through acme"),
			message("message.received", "z1", alice, "said through zeta")}); err != nil {
		t.Fatal(err)
	}
	settle(t, pool)
	providers := func() []string {
		t.Helper()
		var p []string
		if err := pool.QueryRow(ctx, `SELECT coalesce(array_agg(provider ORDER BY provider), '{}') FROM conversations WHERE contact_address = $1`, alice).Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if got := providers(); !slices.Equal(got, []string{"generic", "generic:acme", "generic:zeta"}) {
		t.Fatalf("alice's conversations before: %v", got)
	}
	s, _ := NewSubject(alice, "generic:acme", nil)
	var doc bytes.Buffer
	records, err := Export(ctx, pool, s, &doc)
	if err != nil {
		t.Fatal(err)
	}
	if records != 3 { // the conversation, its message and its event
		t.Errorf("an export of one conversation with one message and its event counts %d records, want 3", records)
	}
	if !strings.Contains(doc.String(), "said through acme") || strings.Contains(doc.String(), "said through generic") || strings.Contains(doc.String(), "said through zeta") {
		t.Errorf("an export for generic:acme: %.400s…; want acme's message alone", doc.String())
	}
	e := NewEraser(pool, zaptest.NewLogger(t), nil, "test")
	runErasure(t, e, alice, "generic:acme")
	if got := providers(); !slices.Equal(got, []string{"generic", "generic:zeta"}) {
		t.Errorf("alice's conversations after an erasure for generic:acme: %v, want generic's and generic:zeta's", got)
	}
	runErasure(t, e, alice, "generic")
	if got := providers(); len(got) != 0 {
		t.Errorf("alice's conversations after an erasure for generic: %v, want none (generic takes in its named senders)", got)
	}
}

// TestErase: everything about one contact goes (conversation, messages with their
// statuses, a status parked for a message never stored, every payload), the events
// stay as tombstones so that redeliveries remain duplicates, the receipt counts what
// went and keeps only a keyed hash of the address, and another contact is untouched.
// Export before and after shows the same from outside.
func TestErase(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	startProcessor(t, url)
	ctx := context.Background()
	ids := insert(t, pool,
		message("message.received", "a1", alice, "alice's secret"),
		message("message.sent", "a2", alice, "to alice"),
		message("message.received", "b1", bob, "bob's words"),
	)
	insert(t, pool, status("a2", alice, "delivered"), status("gone", alice, "read"))
	settle(t, pool)
	// Kept headers go with the payload (a sender may put a contact in one).
	if _, err := pool.Exec(ctx, `UPDATE inbound_events SET headers = '{"x-note": "kept"}'`); err != nil {
		t.Fatal(err)
	}

	var before bytes.Buffer
	s, _ := NewSubject(alice, "", nil)
	if _, err := Export(ctx, pool, s, &before); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Conversations []struct {
			Messages []map[string]any `json:"messages"`
		} `json:"conversations"`
		Events          []map[string]any `json:"events"`
		PendingStatuses []map[string]any `json:"pending_statuses"`
	}
	if err := json.Unmarshal(before.Bytes(), &doc); err != nil {
		t.Fatalf("export is not JSON: %v\n%s", err, before.String())
	}
	if len(doc.Conversations) != 1 || len(doc.Conversations[0].Messages) != 2 || len(doc.Events) != 4 || len(doc.PendingStatuses) != 1 ||
		strings.Contains(before.String(), "bob") {
		t.Fatalf("export before = %s; want alice's one conversation, 2 messages, 4 events, 1 parked status, nothing of bob's", before.String())
	}
	if got, err := DryRun(ctx, pool, s); err != nil || got != (Counts{Conversations: 1, Messages: 2, Events: 4, PendingStatuses: 1, Changes: 4}) {
		t.Errorf("DryRun = %+v, %v", got, err)
	}

	e := NewEraser(pool, zaptest.NewLogger(t), nil, "test")
	e.Batch = 1 // several batches
	r := runErasure(t, e, "+1 555 222 3333", "")
	if r.Counts != (Counts{Conversations: 1, Messages: 2, Events: 4, PendingStatuses: 1, Changes: 4}) {
		t.Errorf("receipt counts = %+v", r.Counts)
	}
	if want, _ := HashAddress(ctx, pool, alice); r.ContactHash != want || strings.Contains(r.ContactHash, "5552223333") {
		t.Errorf("receipt hash = %q, want the keyed hash %q", r.ContactHash, want)
	}
	if n := leftAbout(t, pool, alice, "alice's secret", "to alice"); n != 0 {
		t.Errorf("%d rows still hold alice's data", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbound_events WHERE erased_at IS NOT NULL AND payload = '{}' AND headers = '{}'`); n != 4 {
		t.Errorf("%d tombstones without payload and headers, want 4", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbound_events WHERE erased_at IS NULL AND headers = '{"x-note": "kept"}'`); n != 1 {
		t.Errorf("%d events not erased keep their headers, want 1 (bob's)", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbound_events WHERE external_id = $1 AND payload::text LIKE '%bob''s words%'`, ids[2]); n != 1 {
		t.Error("bob's event was touched")
	}
	if n := count(t, pool, `SELECT count(*) FROM messages WHERE sender = $1`, bob); n != 1 {
		t.Error("bob's message was erased")
	}
	// A redelivery meets the tombstone: nothing is stored again.
	if n := count(t, pool, `WITH ins AS (INSERT INTO inbound_events (provider, external_id, payload) VALUES ('generic', $1, '{}')
ON CONFLICT (provider, external_id) DO NOTHING RETURNING 1) SELECT count(*) FROM ins`, ids[0]); n != 0 {
		t.Error("a redelivery of an erased event was stored")
	}
	// A tombstone is never replayed.
	if n, err := processor.RequeueState(ctx, pool, "processed", "", 100); err != nil || n != 1 {
		t.Errorf("replaying every processed event requeued %d, %v; want 1 (bob's), no tombstone", n, err)
	}

	var after bytes.Buffer
	if _, err := Export(ctx, pool, s, &after); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(after.Bytes(), &doc); err != nil || len(doc.Conversations)+len(doc.Events)+len(doc.PendingStatuses) != 0 {
		t.Errorf("export after = %s, %v; want nothing", after.String(), err)
	}
	// Erasing again is harmless, and a new message starts a new conversation.
	if r := runErasure(t, e, alice, ""); r.Counts != (Counts{}) {
		t.Errorf("second erasure counts = %+v, want zeros", r.Counts)
	}
	insert(t, pool, message("message.received", "a3", alice, "hello again"))
	settle(t, pool)
	if n := count(t, pool, `SELECT count(*) FROM conversations WHERE contact_address = $1`, alice); n != 1 {
		t.Errorf("%d conversations for a new message after erasure, want 1", n)
	}
}

// TestEraseUnderStream: while an erasure runs, in small batches, the contact's
// messages and statuses keep arriving and being processed. Afterwards each of their
// events is either erased with its message, or kept with its message, in a
// conversation that did not exist before the erasure ended: never a message without
// its payload, nor a payload whose message was erased. Without the contact locks, a
// message committed between a batch and the next lands in a conversation the next
// batch deletes, and is lost with its payload intact. And a follower reading the
// change feed all the while is always served every change's object: a message's
// changes, which refer to it, go in the batch that deletes it.
func TestEraseUnderStream(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	startProcessor(t, url)
	startProcessor(t, url)
	ctx := context.Background()
	for i := range 200 {
		insert(t, pool, message("message.received", fmt.Sprintf("pre-%d", i), alice, "old"))
	}
	settle(t, pool)
	var first int64
	if err := pool.QueryRow(ctx, `SELECT id FROM conversations WHERE contact_address = $1`, alice).Scan(&first); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var streamErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("live-%d", i)
			if _, streamErr = store(pool, message("message.received", id, alice, "live"), status(id, alice, "read")); streamErr != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var feedErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for c := (feed.Cursor{}); ; {
				page, err := feed.Read(ctx, pool, c, 500)
				if err != nil {
					feedErr = err
					return
				}
				if len(page) == 0 {
					break
				}
				c = page[len(page)-1].Cursor()
			}
		}
	}()
	stopStream := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopStream)
	e := NewEraser(pool, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), nil, "test")
	e.Batch = 40
	for range 3 {
		runErasure(t, e, alice, "")
	}
	stopStream()
	if streamErr != nil {
		t.Fatal(streamErr)
	}
	if feedErr != nil {
		t.Errorf("the change feed failed during the erasure: %v", feedErr)
	}
	settle(t, pool)

	// Every message event: erased and no message, or kept with its message.
	rows, err := pool.Query(ctx, `
SELECT e.external_id, e.erased_at IS NOT NULL, m.id IS NOT NULL, COALESCE(m.conversation_id, 0)
FROM inbound_events e
LEFT JOIN messages m ON m.provider = 'generic' AND m.provider_message_id = e.payload->'data'->>'message_id'
WHERE e.payload->>'type' = 'message.received' OR e.erased_at IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	kept, erased := 0, 0
	for rows.Next() {
		var ext string
		var isErased, hasMessage bool
		var conv int64
		if err := rows.Scan(&ext, &isErased, &hasMessage, &conv); err != nil {
			t.Fatal(err)
		}
		switch {
		case isErased && !hasMessage:
			erased++
		case !isErased && hasMessage && conv != first:
			kept++
		default:
			t.Errorf("event %s: erased %v, message %v in conversation %d (the erased one is %d): half of each", ext, isErased, hasMessage, conv, first)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM conversations WHERE id = $1`, first); n != 0 {
		t.Error("the erased conversation is still there")
	}
	t.Logf("%d events erased, %d kept (arrived after an erasure ended)", erased, kept)
}

func TestNewSubject(t *testing.T) {
	for _, c := range []struct{ address, provider, err string }{
		{"", "", "contact is required"},
		{strings.Repeat("1", 300), "", "at most 256"},
		{alice, "smoke-signals", "provider must be one of"},
		{" \t ", "", "contact is required"}, // blanks are no address
	} {
		if _, err := NewSubject(c.address, c.provider, nil); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("NewSubject(%.20q, %q) = %v, want %q", c.address, c.provider, err, c.err)
		}
	}
	s, err := NewSubject(" +1 (555) 222-3333 ", "twilio", nil)
	if err != nil || s.Address != alice || len(s.Forms) != 1 {
		t.Errorf("NewSubject = %+v, %v; want %s and no hashed forms without a key", s, err, alice)
	}
	// Under a hash rule, every form a sender may have written the number in is
	// looked up hashed: E.164, the digits alone (a sender that drops the "+"), and a
	// hash's hex alone (what a provider that parses "kind:value" addresses keeps).
	rule, _ := redact.ParseRule("generic:/data/contact=hash")
	policy, err := redact.NewPolicy([]redact.Rule{rule}, map[string]redact.Protection{"generic": nil}, []byte("a redaction key of 32 bytes....."))
	if err != nil {
		t.Fatal(err)
	}
	s, err = NewSubject(alice, "generic", policy) // generic: no spellings of its own
	plus, _ := policy.Hashed(alice)
	digits, _ := policy.Hashed(strings.TrimPrefix(alice, "+"))
	for _, form := range []string{alice, plus, digits, strings.TrimPrefix(plus, redact.HashPrefix)} {
		if err != nil || !slices.Contains(s.Forms, form) {
			t.Errorf("NewSubject under a hash rule = %+v, %v; want the form %s", s, err, form)
		}
	}
}

// TestExportStreams: a contact with 100,000 messages (and their events) exports as
// one valid document of tens of megabytes while the heap stays a small fraction of
// it: rows are written as they are read, never gathered. The figure is logged.
func TestExportStreams(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	const n = 100000
	if _, err := pool.Exec(ctx, `
WITH conv AS (
    INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
    VALUES ('generic', $2, $3, now()) RETURNING id
),
events AS (
    INSERT INTO inbound_events (provider, external_id, state, received_at, processed_at, payload, contact)
    SELECT 'generic', 'big-' || g, 'processed', now(), now(),
           jsonb_build_object('type', 'message.received', 'data', jsonb_build_object('message_id', 'big-' || g,
               'contact', $3::text, 'text', 'message number ' || g || ' of a long history, long enough to weigh something')), $3
    FROM generate_series(1, $1) AS g
    RETURNING id, external_id
)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'generic', e.external_id, conv.id, 'inbound', $3, $2, 'message ' || e.external_id || ' of a long history, long enough to weigh something', 'received', now(), e.id
FROM events e, conv`, n, channel, alice); err != nil {
		t.Fatal(err)
	}
	s, _ := NewSubject(alice, "", nil)
	var peak atomic.Uint64
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	pr, pw := io.Pipe()
	go func() { _, err := Export(ctx, pool, s, pw); pw.CloseWithError(err) }()
	size, messages, err := countJSON(pr)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	if messages != n {
		t.Fatalf("export has %d messages, want %d", messages, n)
	}
	grew := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("exported %d messages and %d events, %.1f MB, heap grew at most %.1f MB", n, n, float64(size)/1e6, float64(grew)/1e6)
	if grew > size/4 {
		t.Errorf("heap grew %d bytes for a %d-byte export: it is being gathered, not streamed", grew, size)
	}
}

// countJSON reads one JSON document token by token (keeping none of it, as a client
// writing to a file would) and counts its bytes and its messages.
func countJSON(r io.Reader) (bytes int64, messages int, err error) {
	cr := &counter{r: r}
	dec := json.NewDecoder(cr)
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if depth != 0 {
				return cr.n, messages, fmt.Errorf("document ends at depth %d", depth)
			}
			return cr.n, messages, nil
		}
		if err != nil {
			return cr.n, messages, err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		case "provider_message_id":
			messages++
		}
	}
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestRewriteSkipsWhatAnErasureEmptied: a retroactive redaction that read a payload
// before an erasure emptied it does not write the payload back (redacted, but holding
// the rest of what the erasure removed): its update skips tombstones, re-checked on the
// row the erasure committed.
func TestRewriteSkipsWhatAnErasureEmptied(t *testing.T) {
	t.Parallel()
	pool := aliceSaidOneThing(t)
	ctx := context.Background()
	policy := removeText(t)
	var p RewriteProgress
	pgtest.LineUp(t, pool, func(erasure pgx.Tx) error { // an erasure's batch, committed once the rewrite waits to write
		_, err := erasure.Exec(ctx, `UPDATE inbound_events SET payload = '{}', headers = '{}', contact = NULL, erased_at = now()`)
		return err
	}, true, func() (err error) {
		p, err = Rewrite(ctx, pool, policy, time.Now().Add(time.Hour), 0, 100, nil)
		return err
	})
	if p.Scanned != 1 || p.Rewritten != 0 {
		t.Errorf("rewrite %+v, want the event scanned and nothing written", p)
	}
	var payload string
	if err := pool.QueryRow(ctx, `SELECT payload::text FROM inbound_events`).Scan(&payload); err != nil || payload != "{}" {
		t.Errorf("payload after the erasure and the rewrite: %s (%v), want {}", payload, err)
	}
}

// TestExportDocument: an export is one valid JSON document however many
// conversations the contact has, each part in its documented order (conversations
// and events by id, messages by the time they were sent), without the events an
// erasure emptied, and with no provider when none was asked for.
func TestExportDocument(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
WITH convs AS (
    INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
    SELECT 'generic', '+1555000000' || g, $1, now() FROM generate_series(1, 3) AS g RETURNING id, channel_address
),
events AS (
    INSERT INTO inbound_events (provider, external_id, state, received_at, processed_at, payload, contact, erased_at)
    SELECT 'generic', 'x-' || g, 'processed', now(), now(), '{}', $1, CASE WHEN g = 2 THEN now() END
    FROM generate_series(1, 4) AS g RETURNING id, external_id
)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'generic', e.external_id, c.id, 'inbound', $1, c.channel_address, 'hi', 'received',
       now() - CASE e.external_id WHEN 'x-1' THEN interval '1 minute' WHEN 'x-3' THEN interval '3 minutes' ELSE interval '2 minutes' END, e.id
FROM events e JOIN convs c ON c.channel_address = '+15550000001' WHERE e.external_id IN ('x-1', 'x-3', 'x-4')`, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO pending_statuses (provider, provider_message_id, inbound_event_id, status, status_at)
SELECT 'generic', 'out-' || id, id, 'delivered', now() FROM inbound_events WHERE external_id IN ('x-3', 'x-4') ORDER BY id DESC`); err != nil {
		t.Fatal(err)
	}
	s, _ := NewSubject(alice, "", nil)
	var buf bytes.Buffer
	if _, err := Export(ctx, pool, s, &buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Provider      *string
		Conversations []struct {
			ID       int64
			Messages []struct {
				ProviderMessageID string `json:"provider_message_id"`
			}
		}
		Events []struct {
			ExternalID string `json:"external_id"`
		}
		PendingStatuses []struct {
			ProviderMessageID string `json:"provider_message_id"`
			EventID           int64  `json:"event_id"`
		} `json:"pending_statuses"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("the export is not one JSON document: %v\n%s", err, buf.Bytes())
	}
	if doc.Provider != nil {
		t.Errorf("provider %q, want null (none asked for)", *doc.Provider)
	}
	if len(doc.Conversations) != 3 || doc.Conversations[0].ID > doc.Conversations[1].ID || doc.Conversations[1].ID > doc.Conversations[2].ID {
		t.Fatalf("conversations %+v, want three by id", doc.Conversations)
	}
	var msgs []string
	for _, m := range doc.Conversations[0].Messages {
		msgs = append(msgs, m.ProviderMessageID)
	}
	var events []string
	for _, e := range doc.Events {
		events = append(events, e.ExternalID)
	}
	if !slices.Equal(msgs, []string{"x-3", "x-4", "x-1"}) || !slices.Equal(events, []string{"x-1", "x-3", "x-4"}) {
		t.Errorf("messages %v (want x-3, x-4, x-1: by the time sent), events %v (want x-1, x-3, x-4: by id, the erased x-2 left out)", msgs, events)
	}
	if p := doc.PendingStatuses; len(p) != 2 || p[0].EventID > p[1].EventID {
		t.Errorf("parked statuses %+v, want two by event", p)
	}
}

// TestRewriteNamedSendersInBatches: a rewrite applies a provider's rules to its
// named senders' events too (stored as generic:name), batch after batch, reporting
// after each.
func TestRewriteNamedSendersInBatches(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state)
SELECT CASE WHEN g = 2 THEN 'generic' ELSE 'generic:acme' END, 'w-' || g, '{"data": {"text": "secret"}}', 'processed'
FROM generate_series(1, 3) AS g`); err != nil {
		t.Fatal(err)
	}
	policy := removeText(t)
	var reports []RewriteProgress
	p, err := Rewrite(ctx, pool, policy, time.Now().Add(time.Hour), 0, 2, func(p RewriteProgress) { reports = append(reports, p) })
	if err != nil || p.Scanned != 3 || p.Rewritten != 3 {
		t.Fatalf("rewrite %+v, %v; want all 3 scanned and rewritten", p, err)
	}
	if len(reports) != 2 || reports[0].Scanned != 2 || reports[1] != p {
		t.Errorf("progress %+v, want after each of the two batches", reports)
	}
	var left int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM inbound_events WHERE payload::text LIKE '%secret%'`).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d payloads still hold the text (%v), want 0", left, err)
	}
}

// removeText is a policy that removes generic payloads' data.text.
func removeText(t *testing.T) *redact.Policy {
	t.Helper()
	rule, err := redact.ParseRule("generic:/data/text=remove")
	if err != nil {
		t.Fatal(err)
	}
	policy, err := redact.NewPolicy([]redact.Rule{rule}, map[string]redact.Protection{"generic": {}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy
}

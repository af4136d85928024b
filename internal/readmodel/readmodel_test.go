package readmodel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestEventListPlans: on 200,000 events of which 20 are dead, each filter of the
// events list reads an index in id order, in the generic plan too: listing dead
// events walks their small partial index, never the whole table.
func TestEventListPlans(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	if _, err := pool.Exec(context.Background(), `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at, received_at, contact)
SELECT CASE WHEN g % 3 = 0 THEN 'twilio' ELSE 'generic' END, 'e-' || g, '{}',
       CASE WHEN g % 10000 = 0 THEN 'dead' ELSE 'processed' END, now(),
       now() - (200000 - g) * interval '1 second', '+1555000' || (g % 1000)
FROM generate_series(1, 200000) AS g;
ANALYZE inbound_events`); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		f     EventFilter
		index string
	}{
		"events":                     {EventFilter{Limit: 51}, "inbound_events_pkey"},
		"events, next page":          {EventFilter{Limit: 51, Before: 150000}, "inbound_events_pkey"},
		"dead events":                {EventFilter{Limit: 51, State: "dead"}, "inbound_events_dead"},
		"dead events, next page":     {EventFilter{Limit: 51, State: "dead", Before: 150000}, "inbound_events_dead"},
		"a provider's events":        {EventFilter{Limit: 51, Provider: "twilio"}, "inbound_events_pkey"},
		"a provider's processed":     {EventFilter{Limit: 51, Provider: "twilio", State: "processed"}, "inbound_events_pkey"},
		"an external id":             {EventFilter{Limit: 51, Provider: "twilio", ExternalID: "e-3"}, "inbound_events_provider_external_id_key"},
		"a time range":               {EventFilter{Limit: 51, From: hoursAgo(30), To: hoursAgo(20)}, "inbound_events_pkey"},
		"dead in a time range":       {EventFilter{Limit: 51, State: "dead", From: hoursAgo(30), To: hoursAgo(20)}, "inbound_events_dead"},
		"a contact's events":         {EventFilter{Limit: 51, Contacts: []string{"+15550007", "+15550008"}}, "inbound_events_contact_id"},
		"a contact's, in a range":    {EventFilter{Limit: 51, Contacts: []string{"+15550007"}, From: hoursAgo(30), To: hoursAgo(20)}, "inbound_events_contact_id"},
		"payload text":               {EventFilter{Limit: 51, Text: "refund"}, "inbound_events_pkey"},
		"payload path, a provider's": {EventFilter{Limit: 51, Provider: "twilio", Path: "$.Body"}, "inbound_events_pkey"},
		"a contact's payload text":   {EventFilter{Limit: 51, Contacts: []string{"+15550007"}, Text: "refund"}, "inbound_events_contact_id"},
		"dead with an error":         {EventFilter{Limit: 51, State: "dead", Error: "boom", HasError: true}, "inbound_events_dead"},
	} {
		if err := c.f.Resolve(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
		sql, args := c.f.query(eventColumns, false)
		// A contact's events are merged from one scan per form (a sort of at most a
		// page per form); each scan reads (contact, id), in order or, for a contact
		// with few events, all of them through a bitmap: bounded either way.
		sorts := len(c.f.Contacts) > 0
		for _, generic := range []bool{false, true} {
			if p := pgtest.Plan(t, pool, generic, sql, args...); strings.Contains(p, "Seq Scan") || (!sorts && strings.Contains(p, "Sort")) || !strings.Contains(p, c.index) {
				t.Errorf("%s (generic plan: %v): %s, want an in-order scan of %s", name, generic, p, c.index)
			}
		}
	}
}

func hoursAgo(h int) time.Time { return time.Now().Add(-time.Duration(h) * time.Hour) }

func TestNormalizeContact(t *testing.T) {
	for in, want := range map[string]string{
		"+15551234567":      "+15551234567",
		" 15551234567":      "+15551234567", // a "+" sent unencoded in a query string
		"15551234567":       "+15551234567",
		"+1 555 123 4567":   "+15551234567",
		"+1 (555) 123-4567": "+15551234567",
		"US.1349120865":     "US.1349120865",
		" abc":              "abc",
	} {
		if got := NormalizeContact(in); got != want {
			t.Errorf("NormalizeContact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFiltersNameTheValidValues: an unknown state or provider is refused with the
// values that are valid, and text over its bound, not UTF-8 or holding a NUL, an
// empty time range or no limit with what is wrong, before any query.
func TestFiltersNameTheValidValues(t *testing.T) {
	at := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{EventFilter{State: "deadd", Limit: 1}.Validate(), "pending, processing, processed, dead"},
		{EventFilter{Provider: "twillio", Limit: 1}.Validate(), "generic, twilio, meta, telnyx"},
		{EventFilter{ExternalID: "SM123", Limit: 1}.Validate(), "choose the provider too"},
		{EventFilter{Error: "boom", HasError: true, State: "processed", Limit: 1}.Validate(), "choose the state dead too"},
		{ReplayFilter{State: "pending", Limit: 1}.Validate(), "dead or processed"},
		{ReplayFilter{Limit: 1}.Validate(), "state is required: dead or processed"},
		{ReplayFilter{State: "dead", Limit: MaxReplay + 1}.Validate(), "from 1 to"},
		{CheckProvider("nope"), "generic, twilio"},
		{EventFilter{Text: strings.Repeat("a", maxText+1), Limit: 1}.Validate(), "the text is at most 256 bytes"},
		{EventFilter{Text: "caf\xe9", Limit: 1}.Validate(), "the text is at most 256 bytes of text"},
		{EventFilter{Text: "a\x00b", Limit: 1}.Validate(), "the text is at most 256 bytes of text"},
		{EventFilter{Path: "$." + strings.Repeat("a", maxPath), Limit: 1}.Validate(), "the JSON path is at most 512 bytes"},
		{EventFilter{Error: strings.Repeat("e", maxError+1), HasError: true, State: "dead", Limit: 1}.Validate(), "the error is at most 4096 bytes"},
		{EventFilter{Provider: "generic", ExternalID: strings.Repeat("x", maxText+1), Limit: 1}.Validate(), "an external id is at most 256 bytes"},
		{EventFilter{From: at, To: at, Limit: 1}.Validate(), "the time range is empty"},
		{EventFilter{}.Validate(), "limit must be at least 1, got 0"},
	} {
		if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) || !errorsIs(tc.err) {
			t.Errorf("error %v, want ErrBadFilter naming %q", tc.err, tc.want)
		}
	}
	for _, f := range []EventFilter{
		{State: "dead", Provider: "telnyx", Limit: 1},
		{Text: strings.Repeat("é", maxText/2), Path: "$." + strings.Repeat("a", maxPath-2), Limit: 1}, // at the bounds
		{From: at, To: at.Add(time.Nanosecond), Limit: 1},
	} {
		if err := f.Validate(); err != nil {
			t.Errorf("valid filter refused: %v", err)
		}
	}
}

func errorsIs(err error) bool { return errors.Is(err, ErrBadFilter) }

// TestShowEvent: an event in full carries the message it became, found through the
// provider's message id.
func TestShowEvent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := pgtest.NewPool(t)
	var eventID, convID int64
	err := pool.QueryRow(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state) VALUES ('generic', 'evt-1',
 '{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-1","channel":"+15550001111","contact":"+15552223333","text":"hi"}}',
 'processed') RETURNING id`).Scan(&eventID)
	if err == nil {
		err = pool.QueryRow(ctx, `INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', '+15550001111', '+15552223333', now()) RETURNING id`).Scan(&convID)
	}
	if err == nil {
		_, err = pool.Exec(ctx, `INSERT INTO messages (provider, provider_message_id, conversation_id, direction, type, sender, recipient, text, media, status, sent_at, inbound_event_id)
VALUES ('generic', 'm-1', $1, 'inbound', 'text', '+15552223333', '+15550001111', 'hi', '[]', 'received', now(), $2)`, convID, eventID)
	}
	if err != nil {
		t.Fatal(err)
	}
	d, err := ShowEvent(ctx, pool, eventID)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message == nil || d.Message.ProviderMessageID != "m-1" || d.Meaning != "inbound text message" || len(d.Payload) == 0 {
		t.Errorf("ShowEvent = %+v (message %+v), want the payload and message m-1", d, d.Message)
	}
	if _, err := ShowEvent(ctx, pool, eventID+100); !errors.Is(err, ErrNotFound) {
		t.Errorf("ShowEvent(unknown) = %v, want ErrNotFound", err)
	}
}

// TestListQueriesUseIndexes: on 200,000 messages in 2,000 conversations, every list
// query reads its index in order: no sequential scan of a big table, no sort.
func TestListQueriesUseIndexes(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	for _, sql := range []string{
		`INSERT INTO inbound_events (provider, external_id, payload, state) VALUES ('generic', 'seed', '{}', 'processed')`,
		`INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
SELECT CASE WHEN c % 100 = 1 THEN 'meta' WHEN c % 100 = 2 THEN 'generic:acme' WHEN c % 2 = 0 THEN 'generic' ELSE 'twilio' END,
       '+15550001111', '+1555' || lpad(c::text, 7, '0'), timestamptz '2026-11-25 10:00:00Z' + c * interval '1 minute'
FROM generate_series(1, 2000) AS c`,
		`INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT c.provider, c.id || '-' || m, c.id, 'inbound', c.contact_address, c.channel_address, 'message ' || m, 'received',
       timestamptz '2026-11-25 09:00:00Z' + (m / 3) * interval '1 second', (SELECT id FROM inbound_events LIMIT 1)
FROM conversations c CROSS JOIN generate_series(1, 100) AS m`,
		"ANALYZE",
	} {
		if _, err := pool.Exec(context.Background(), sql); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	after := &Key{T: at, ID: 500}
	type plan struct {
		sql   string
		args  []any
		index string
	}
	cases := map[string]plan{}
	for name, f := range map[string]ConversationFilter{
		"conversations":            {Limit: 51},
		"conversations, next page": {Limit: 51, After: after},
		"conversations by contact": {Limit: 51, Contacts: []string{"+15550000042"}},
		"conversations since":      {Limit: 51, Since: at.Add(4 * time.Hour), After: after},
	} {
		sql, args := conversationsQuery(f)
		index := "conversations_latest"
		if len(f.Contacts) > 0 {
			index = "conversations_contact"
		}
		cases[name] = plan{sql, args, index}
	}
	cases["messages"] = plan{messagesAsc, []any{int64(42), at, int64(0), 51}, "messages_conversation"}
	cases["messages, newest first"] = plan{messagesDesc, []any{int64(42), at, int64(1 << 62), 51}, "messages_conversation"}
	for name, c := range cases {
		joined := pgtest.Plan(t, pool, false, c.sql, c.args...)
		if strings.Contains(joined, "Seq Scan") || strings.Contains(joined, "Sort") || !strings.Contains(joined, c.index) {
			t.Errorf("%s: plan %s, want an in-order scan of %s", name, joined, c.index)
		}
	}
	// A message by the provider's id is read by the unique key, for each stored name.
	for _, generic := range []bool{false, true} {
		if p := pgtest.Plan(t, pool, generic, messagesByID, []string{"generic", "generic:acme"}, "7-42"); strings.Contains(p, "Seq Scan") ||
			strings.Contains(p, pgtest.WholeIndex) || !strings.Contains(p, "messages_provider_message_id_key") {
			t.Errorf("a message by the provider's id (generic plan: %v): %s, want messages_provider_message_id_key, bounded", generic, p)
		}
	}
	// A provider with few conversations (meta: 1 in 100) is read from
	// conversations_provider, its own entries only (sorted when they are fewer than a
	// page), never by walking conversations_latest past everyone else's; each stored
	// name is a branch of its own, merged in order.
	for name, f := range map[string]ConversationFilter{
		"a provider's":                   {Limit: 51, Provider: "meta", names: []string{"meta"}},
		"a provider's, next page":        {Limit: 51, Provider: "meta", names: []string{"meta"}, After: after},
		"a named sender's":               {Limit: 51, Provider: "generic:acme", names: []string{"generic:acme"}, After: after},
		"a provider's named senders too": {Limit: 51, Provider: "generic", names: []string{"generic", "generic:acme"}, After: after},
	} {
		sql, args := conversationsQuery(f)
		joined := pgtest.Plan(t, pool, false, sql, args...)
		rare := strings.Count(joined, "Index Scan conversations_provider")
		if strings.Contains(joined, "Seq Scan") || rare == 0 || (len(f.names) == 1 && strings.Contains(joined, "conversations_latest")) ||
			(len(f.names) > 1 && !strings.HasPrefix(joined, "Limit | Merge Append")) {
			t.Errorf("%s: plan %s, want the rare names read from conversations_provider, merged in order", name, joined)
		}
	}
}

// TestRedactedMarks: the lists say which fields a redaction rule wrote (a masked
// text, a hashed address, a Twilio-parsed hash's hex), and nothing for plain values.
func TestRedactedMarks(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	hex := strings.Repeat("ab", 32)
	var conv int64
	if err := pool.QueryRow(ctx, `
INSERT INTO conversations (provider, channel_address, contact_address, contact_name, last_message_at)
VALUES ('generic', '+15550001111', 'hmac-sha256:' || $1, 'Ann', now()) RETURNING id`, hex).Scan(&conv); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
VALUES ('generic', 'm1', $1, 'inbound', $2, '+15550001111', '[redacted]', 'received', now(), 1),
       ('generic', 'm2', $1, 'inbound', '+15552223333', '+15550001111', 'plain', 'received', now() + interval '1 second', 2)`, conv, hex); err != nil {
		t.Fatal(err)
	}
	convs, err := ListConversations(ctx, pool, ConversationFilter{Limit: 10})
	if err != nil || len(convs) != 1 || fmt.Sprint(convs[0].Redacted) != "[contact_address]" {
		t.Errorf("conversations = %+v, %v; want contact_address marked", convs, err)
	}
	msgs, err := ListMessages(ctx, pool, MessageFilter{Conversation: conv, Limit: 10})
	if err != nil || len(msgs) != 2 || fmt.Sprint(msgs[0].Redacted) != "[sender text]" || fmt.Sprint(msgs[1].Redacted) != "[]" {
		t.Errorf("messages = %+v, %v; want [sender text] then []", msgs, err)
	}
}

// TestSearchEvents: each condition selects what it says, and a payload search pages
// through windows until it finds a rare match far back.
func TestSearchEvents(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	// 25,000 events one second apart, ending now; a few marked ones.
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state, processed_at, received_at, contact)
SELECT 'generic', 'e-' || g,
       CASE WHEN g = 3 THEN '{"text": "A Refund_please", "kind": "image"}'::jsonb
            WHEN g % 5000 = 0 THEN '{"kind": "image"}'::jsonb ELSE '{"text": "hello"}'::jsonb END,
       'processed', now(), now() - (25000 - g) * interval '1 second',
       CASE WHEN g % 100 = 0 THEN '+15550001' WHEN g % 100 = 1 THEN 'hash-of-it' END
FROM generate_series(1, 25000) AS g`); err != nil {
		t.Fatal(err)
	}
	var first int64
	if err := pool.QueryRow(ctx, `SELECT min(id) FROM inbound_events`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	g := func(id int64) int64 { return id - first + 1 } // the generate_series number
	search := func(f EventFilter) SearchPage {
		t.Helper()
		p, err := SearchEvents(ctx, pool, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		return p
	}

	// A payload text far back: the first pages are windows without a match.
	f := EventFilter{Text: "refund_PLEASE", Limit: 50}
	var found []int64
	windows := 0
	for {
		p := search(f)
		for _, e := range p.Events {
			found = append(found, g(e.ID))
		}
		if p.Windowed {
			windows++
		}
		if p.Next == 0 {
			break
		}
		f.Before = p.Next
	}
	if !slices.Equal(found, []int64{3}) || windows != 2 {
		t.Errorf("text search found %v in %d windows, want [3] after 2 windows", found, windows)
	}
	// "_" and "%" are themselves, not LIKE's wildcards (the window ends before event
	// 10, so it holds event 3).
	for _, text := range []string{"refund%please", "a_refund", `a\ refund`} {
		if p := search(EventFilter{Text: text, Limit: 50, Before: first + 9}); len(p.Events) != 0 {
			t.Errorf("%q matched %d events: a wildcard or an escape", text, len(p.Events))
		}
	}
	if p := search(EventFilter{Text: "a refund_please", Limit: 50, Before: first + 9}); len(p.Events) != 1 {
		t.Errorf("the text itself matched %d events, want 1", len(p.Events))
	}

	// A JSON path, newest first, in a time range (12,000 events: two windows).
	f = EventFilter{Path: `$.kind ? (@ == "image")`, Limit: 50, From: time.Now().Add(-12000 * time.Second)}
	var kinds []int64
	p := search(f)
	for ; ; p = search(f) {
		for _, e := range p.Events {
			kinds = append(kinds, g(e.ID))
		}
		if p.Next == 0 {
			break
		}
		f.Before = p.Next
	}
	if !slices.Equal(kinds, []int64{25000, 20000, 15000}) {
		t.Errorf("path in a time range found %v, want [25000 20000 15000]", kinds)
	}

	// A time range is exact at both ends.
	from, to := time.Now().Add(-100*time.Second), time.Now().Add(-50*time.Second)
	p = search(EventFilter{From: from, To: to, Limit: 100})
	for _, e := range p.Events {
		if e.ReceivedAt.Before(from) || !e.ReceivedAt.Before(to) {
			t.Errorf("event received at %s outside [%s, %s)", e.ReceivedAt, from, to)
		}
	}
	if n := len(p.Events); n < 49 || n > 51 {
		t.Errorf("50 s range: %d events, want about 50", n)
	}

	// A contact's events under any of its forms, newest first, paged.
	f = EventFilter{Contacts: []string{"+15550001", "hash-of-it"}, Limit: 300}
	p = search(f)
	if len(p.Events) != 300 || p.Next == 0 || g(p.Events[0].ID) != 25000 || g(p.Events[1].ID) != 24901 {
		t.Fatalf("contact page: %d events, next %d, first %d", len(p.Events), p.Next, g(p.Events[0].ID))
	}
	f.Before = p.Next
	if p = search(f); len(p.Events) != 200 || p.Next != 0 {
		t.Errorf("contact's second page: %d events, next %d, want the last 200", len(p.Events), p.Next)
	}
	// A bulk replay's confirmation counts them (the count once failed for a
	// contact filter: its merged scans are ordered by an id the count did not select).
	if _, n, sample, err := Matching(ctx, pool, EventFilter{Contacts: f.Contacts}, 100000, 2); err != nil || n != 500 || len(sample) != 2 || g(sample[0].ID) != 1 || g(sample[1].ID) != 100 {
		t.Errorf("a contact's events for a replay: %d, sample %d, %v; want 500, the oldest two (1 and 100)", n, len(sample), err)
	}

	// The failures page's groups: dead events by their last error, "" for those
	// that have none (NULL).
	if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload, state, last_error)
VALUES ('generic', 'd-1', '{}', 'dead', 'boom'), ('generic', 'd-2', '{}', 'dead', NULL)`); err != nil {
		t.Fatal(err)
	}
	for errText, want := range map[string]string{"boom": "d-1", "": "d-2"} {
		p := search(EventFilter{State: "dead", Error: errText, HasError: true, Limit: 10})
		if len(p.Events) != 1 || p.Events[0].ExternalID != want {
			t.Errorf("dead events whose error is %q: %+v, want %s alone", errText, p.Events, want)
		}
	}

	// A bulk replay's count that outlasts its timeout is ErrTooSlow, which says how to
	// narrow the filter (not a database error). 25,000 payloads are not read in 1 ms.
	defer func(d time.Duration) { countTimeout = d }(countTimeout)
	countTimeout = time.Millisecond
	if _, _, _, err := Matching(ctx, pool, EventFilter{Text: "no such text anywhere"}, 100000, 1); !errors.Is(err, ErrTooSlow) || !strings.Contains(err.Error(), "narrow it") {
		t.Errorf("a count past its timeout: %v, want ErrTooSlow", err)
	}

	// A path that is not one is refused with the parser's word, before any scan.
	if _, err := SearchEvents(ctx, pool, EventFilter{Path: "$.kind ==", Limit: 1}); !errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), "JSON path") {
		t.Errorf("bad path: %v", err)
	}
	if _, err := SearchEvents(ctx, pool, EventFilter{From: to, To: from, Limit: 1}); !errors.Is(err, ErrBadFilter) {
		t.Errorf("empty range: %v", err)
	}
}

// TestCandidatesWalkWindows: a bulk replay's batches with a payload condition go on
// from where each window ended, so a match past a full window without one is found.
func TestCandidatesWalkWindows(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state)
SELECT 'generic', 'c-' || g, CASE WHEN g = 12000 THEN '{"text": "needle"}'::jsonb ELSE '{"text": "hay"}'::jsonb END, 'dead'
FROM generate_series(1, 12000) AS g`); err != nil {
		t.Fatal(err)
	}
	var first int64
	if err := pool.QueryRow(ctx, `SELECT min(id) FROM inbound_events`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	f := EventFilter{State: "dead", Text: "needle", Limit: 10}
	ids, _, scanned, err := Candidates(ctx, pool, f)
	if err != nil || len(ids) != 0 || scanned != first+SearchWindow-1 {
		t.Fatalf("first window: %v, scanned to %d (%v); want none, to the window's end %d", ids, scanned, err, first+SearchWindow-1)
	}
	f.After = scanned
	if ids, _, _, err = Candidates(ctx, pool, f); err != nil || len(ids) != 1 || ids[0] != first+11999 {
		t.Errorf("second window: %v (%v), want the needle %d", ids, err, first+11999)
	}
}

// TestNamedSendersUnderTheirProvider: a filter by a provider's name takes in its
// named senders' events and conversations (generic: generic:acme too), and a named
// sender's filter only its own; a replay by provider requeues them alike.
func TestNamedSendersUnderTheirProvider(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `
INSERT INTO inbound_events (provider, external_id, payload, state)
VALUES ('generic', 'e1', '{}', 'dead'), ('generic:acme', 'e2', '{}', 'dead'), ('twilio', 'e3', '{}', 'dead'), ('genericacme', 'e4', '{}', 'dead');
INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', '+15550001111', '+15552220001', now()), ('generic:acme', '+15550001111', '+15552220002', now()),
       ('twilio', '+15550001111', '+15552220003', now())`); err != nil {
		t.Fatal(err)
	}
	for filter, want := range map[string]string{"generic": "e2 e1", "generic:acme": "e2", "twilio": "e3"} {
		events, err := ListEvents(ctx, pool, EventFilter{Provider: filter, Limit: 10})
		var got []string
		for _, e := range events {
			got = append(got, e.ExternalID)
		}
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("events of %s: %v (%v), want %s", filter, got, err, want)
		}
	}
	for filter, want := range map[string]int{"generic": 2, "generic:acme": 1} {
		convs, err := ListConversations(ctx, pool, ConversationFilter{Provider: filter, Limit: 10})
		if err != nil || len(convs) != want {
			t.Errorf("conversations of %s: %d (%v), want %d", filter, len(convs), err, want)
		}
	}
	if n, err := processor.RequeueState(ctx, pool, "dead", "generic", 10); err != nil || n != 2 {
		t.Errorf("replay of generic's dead events requeued %d (%v), want 2 (generic and generic:acme)", n, err)
	}
}

// TestProviderListPlannedPerProvider: the provider filter's statement is planned for
// the provider it is given, not cached. With pgx's statement cache, Postgres keeps a
// generic plan once a few executions (here of telnyx, 2% of the conversations) cost
// more than it estimates that plan at; the generic plan walks conversations_latest
// for any provider, and a provider with few conversations then reads most of it
// (54,000 entries for meta's three pages here, without the per-call planning).
func TestProviderListPlannedPerProvider(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1 // one backend: its plan cache, and its statistics to flush
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx := context.Background()
	for _, sql := range []string{
		`INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
SELECT CASE WHEN c % 500 = 0 THEN 'meta' WHEN c % 50 = 1 THEN 'telnyx' WHEN c % 2 = 0 THEN 'generic' ELSE 'twilio' END, '+15550001111', '+1555' || lpad(c::text, 7, '0'),
       timestamptz '2026-11-25 10:00:00Z' + c * interval '1 second'
FROM generate_series(1, 20000) AS c`,
		"ANALYZE conversations",
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	latestRead := func() (n int64) {
		t.Helper()
		// Flush this backend's counters, then read them afresh.
		if _, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
			t.Fatal(err)
		}
		if err := pool.QueryRow(ctx, `SELECT pg_stat_clear_snapshot(), idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'conversations_latest'`).Scan(nil, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	second := &Key{T: time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC), ID: 1 << 40}
	for range 8 {
		if _, err := ListConversations(ctx, pool, ConversationFilter{Provider: "telnyx", After: second, Limit: 51}); err != nil {
			t.Fatal(err)
		}
	}
	before := latestRead()
	for range 3 {
		cs, err := ListConversations(ctx, pool, ConversationFilter{Provider: "meta", After: second, Limit: 51})
		if err != nil || len(cs) == 0 {
			t.Fatalf("meta's conversations: %d (%v)", len(cs), err)
		}
	}
	if read := latestRead() - before; read > 0 {
		t.Errorf("listing meta's conversations (1 in 500) read %d entries of conversations_latest, want none: planned for any provider", read)
	}
}

package readmodel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/provider"
	"inboxd/internal/redact"
)

// ErrNotFound: no conversation or event has that id.
var ErrNotFound = errors.New("not found")

// Conversation is one conversation as the API shows it.
type Conversation struct {
	ID             int64     `json:"id"`
	Provider       string    `json:"provider"`
	ChannelAddress string    `json:"channel_address"`
	ContactAddress string    `json:"contact_address"`
	ContactName    *string   `json:"contact_name"`
	CreatedAt      time.Time `json:"created_at"`
	LastMessageAt  time.Time `json:"last_message_at"`
	// Redacted names the fields a redaction rule wrote (masked or hashed), so that a
	// client does not mistake "[redacted]" for what the contact typed.
	Redacted []string `json:"redacted" db:"-"`
}

// MarkRedacted fills in Redacted.
func (c *Conversation) MarkRedacted() {
	c.Redacted = redactedFields(map[string]*string{"contact_address": &c.ContactAddress, "contact_name": c.ContactName})
}

// Message is one message as the API shows it.
type Message struct {
	ID                int64           `json:"id"`
	ConversationID    int64           `json:"conversation_id"`
	Provider          string          `json:"provider"`
	ProviderMessageID string          `json:"provider_message_id"`
	Direction         string          `json:"direction"`
	Type              string          `json:"type"`
	Sender            string          `json:"sender"`
	Recipient         string          `json:"recipient"`
	Text              *string         `json:"text"`
	Media             json.RawMessage `json:"media"`
	Content           json.RawMessage `json:"content"`
	Status            string          `json:"status"`
	StatusAt          *time.Time      `json:"status_at"`
	Error             json.RawMessage `json:"error"`
	SentAt            time.Time       `json:"sent_at"`
	CreatedAt         time.Time       `json:"created_at"`
	// EventID is the event that created the message (retention may have deleted it
	// since): the console links it; the API does not serve it.
	EventID  int64    `json:"-"`
	Redacted []string `json:"redacted" db:"-"` // as Conversation.Redacted
}

// MarkRedacted fills in Redacted.
func (m *Message) MarkRedacted() {
	m.Redacted = redactedFields(map[string]*string{"sender": &m.Sender, "recipient": &m.Recipient, "text": m.Text})
}

// redactedFields lists the fields (sorted) whose value a redaction rule wrote; never nil.
func redactedFields(fields map[string]*string) []string {
	out := []string{}
	for name, v := range fields {
		if v != nil && redact.IsRedacted(*v) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Key is a keyset position: the sort key of the last row a page returned.
//
// Pagination is keyset, never OFFSET: the next page is "rows after that key", read
// from the index in order. A page costs the same however deep it is, and rows
// inserted meanwhile cannot shift what the next page returns (OFFSET would skip or
// repeat rows).
type Key struct {
	T  time.Time
	ID int64
}

// ConversationFilter selects conversations, latest activity first.
type ConversationFilter struct {
	Provider string // empty: all
	// names are the stored provider names Provider matches (providerNames), each
	// read in order from conversations_provider.
	names []string
	// Contacts are the forms a contact's address may be stored under
	// (privacy.Subject.Forms: E.164, and its hashes when a redaction rule hashes
	// addresses); empty: every contact's.
	Contacts []string
	Since    time.Time // zero: no bound
	After    *Key      // nil: the first page
	Limit    int
}

// ConversationColumns are the columns of Conversation, in order.
const ConversationColumns = `id, provider, channel_address, contact_address, contact_name, created_at, last_message_at`

// NormalizeContact turns a contact address as people type it into the form addresses
// are stored in: a phone number in E.164 ("+1 555 123 4567", "15551234567" and
// "+15551234567" are one number), anything else as it is. A leading space before
// digits is a "+" that a client sent unencoded in a query string.
func NormalizeContact(s string) string {
	if strings.HasPrefix(s, " ") && len(s) > 1 && s[1] >= '0' && s[1] <= '9' {
		s = "+" + s[1:]
	}
	return provider.E164(s)
}

// conversationsQuery builds the list query for f. Only the filters given become
// conditions, so each query shape gets a plan that uses its index
// (conversations_latest, conversations_contact, conversations_provider) rather than
// one generic plan full of "$n IS NULL OR". A contact stored under one form is read
// in order from conversations_contact; under several (hashed too), its few
// conversations are sorted. A provider's conversations are read in order for each
// stored name it matches (f.names): a branch per name, each at most a page, merged.
func conversationsQuery(f ConversationFilter) (string, []any) {
	var where []string
	args := []any{f.Limit}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	switch len(f.Contacts) {
	case 0:
	case 1:
		add("contact_address = $%d", f.Contacts[0])
	default:
		add("contact_address = ANY($%d::text[])", f.Contacts)
	}
	if !f.Since.IsZero() {
		add("last_message_at >= $%d", f.Since)
	}
	if f.After != nil {
		args = append(args, f.After.T, f.After.ID)
		where = append(where, fmt.Sprintf("(last_message_at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	page := func(where []string) string {
		sql := "SELECT " + ConversationColumns + " FROM conversations"
		if len(where) > 0 {
			sql += " WHERE " + strings.Join(where, " AND ")
		}
		return sql + " ORDER BY last_message_at DESC, id DESC LIMIT $1"
	}
	if f.Provider == "" {
		return page(where), args
	}
	branches := make([]string, len(f.names))
	for i, name := range f.names {
		args = append(args, name)
		branches[i] = page(append([]string{fmt.Sprintf("provider = $%d", len(args))}, where...))
	}
	if len(branches) == 1 {
		return branches[0], args
	}
	return "SELECT * FROM ((" + strings.Join(branches, ") UNION ALL (") + ")) c ORDER BY last_message_at DESC, id DESC LIMIT $1", args
}

// providerNames lists the stored provider names that a provider filter matches: the
// name, and for a provider's name its named senders ("generic" matches
// "generic:acme"), among those that have conversations. It reads
// conversations_provider as a loose index scan, one probe per stored name, so its
// cost is the number of names, not of conversations.
var providerNames = `
WITH RECURSIVE names AS (
    (SELECT provider FROM conversations ORDER BY provider LIMIT 1)
    UNION ALL
    SELECT (SELECT c.provider FROM conversations c WHERE c.provider > n.provider ORDER BY c.provider LIMIT 1)
    FROM names n WHERE n.provider IS NOT NULL
)
SELECT provider FROM names WHERE ` + provider.MatchSQL("provider", "$1") + ` ORDER BY provider`

// storedNames lists the stored provider names the provider filter prov matches
// (providerNames).
func storedNames(ctx context.Context, pool *pgxpool.Pool, prov string) ([]string, error) {
	rows, _ := pool.Query(ctx, providerNames, prov)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("the names of provider %s: %w", prov, err)
	}
	return names, nil
}

// ListConversations lists the conversations f selects, latest activity first.
func ListConversations(ctx context.Context, pool *pgxpool.Pool, f ConversationFilter) ([]Conversation, error) {
	if err := CheckProvider(f.Provider); err != nil {
		return nil, err
	}
	var mode []any // pgx's statement cache, unless a provider is given
	if f.Provider != "" {
		names, err := storedNames(ctx, pool, f.Provider)
		if err != nil {
			return nil, fmt.Errorf("list conversations: %w", err)
		}
		if len(names) == 0 {
			return []Conversation{}, nil
		}
		f.names = names
		// Planned afresh each time, with the provider known: a cached generic plan,
		// made for any provider, may walk conversations_latest and skip the others'
		// conversations, which for a provider with few reads the whole index.
		mode = []any{pgx.QueryExecModeExec}
	}
	sql, args := conversationsQuery(f)
	cs, err := list(ctx, pool, "list conversations", pgx.RowToStructByPos[Conversation], sql, append(mode, args...)...)
	for i := range cs {
		cs[i].MarkRedacted()
	}
	return cs, err
}

// FindConversation returns one conversation.
func FindConversation(ctx context.Context, pool *pgxpool.Pool, id int64) (Conversation, error) {
	rows, _ := pool.Query(ctx, "SELECT "+ConversationColumns+" FROM conversations WHERE id = $1", id)
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Conversation])
	if errors.Is(err, pgx.ErrNoRows) {
		return Conversation{}, fmt.Errorf("conversation %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("get conversation %d: %w", id, err)
	}
	c.MarkRedacted()
	return c, nil
}

// MessageColumns selects the columns of Message, in order; FROM messages follows.
const MessageColumns = `
SELECT id, conversation_id, provider, provider_message_id, direction, type, sender, recipient, text, media,
       content, status, status_at, error, sent_at, created_at, inbound_event_id`

// Messages of a conversation by (sent_at, id), ascending or descending; the
// messages_conversation index serves both directions. sent_at is the provider's
// time, so a message that arrives late (a retried or reordered webhook) takes its
// place among those already listed, possibly before a page a client has read: the
// change feed, not this list, is how a client sees every new message
// (docs/consumers.md).
const (
	messagesAsc = MessageColumns + `
FROM messages
WHERE conversation_id = $1 AND (sent_at, id) > ($2, $3)
ORDER BY sent_at, id
LIMIT $4`
	messagesDesc = MessageColumns + `
FROM messages
WHERE conversation_id = $1 AND (sent_at, id) < ($2, $3)
ORDER BY sent_at DESC, id DESC
LIMIT $4`
)

// MessageFilter selects a conversation's messages.
type MessageFilter struct {
	Conversation int64
	Desc         bool // newest first
	After        *Key // nil: the first page
	Limit        int
}

// ListMessages lists a conversation's messages; an unknown conversation is
// ErrNotFound, not an empty list (a client that mistyped an id must be told so).
func ListMessages(ctx context.Context, pool *pgxpool.Pool, f MessageFilter) ([]Message, error) {
	if _, err := FindConversation(ctx, pool, f.Conversation); err != nil {
		return nil, err
	}
	return pageOfMessages(ctx, pool, f)
}

// pageOfMessages reads the page f selects of a conversation known to exist.
func pageOfMessages(ctx context.Context, pool *pgxpool.Pool, f MessageFilter) ([]Message, error) {
	// Without a cursor, the first page starts from a key before (or, descending,
	// after) every row, so one SQL statement per direction serves every page.
	sql, start := messagesAsc, Key{T: time.Unix(-62135596800, 0), ID: 0}
	if f.Desc {
		sql, start = messagesDesc, Key{T: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ID: 1<<63 - 1}
	}
	if f.After != nil {
		start = *f.After
	}
	return messages(ctx, pool, "list messages", sql, f.Conversation, start.T, start.ID, f.Limit)
}

// messages runs a query of MessageColumns and marks what redaction wrote.
func messages(ctx context.Context, pool *pgxpool.Pool, what, sql string, args ...any) ([]Message, error) {
	ms, err := list(ctx, pool, what, pgx.RowToStructByPos[Message], sql, args...)
	for i := range ms {
		ms[i].MarkRedacted()
	}
	return ms, err
}

// messagesByID reads messages by their unique key, for each of the stored provider
// names $1.
const messagesByID = MessageColumns + `
FROM messages
WHERE provider = ANY($1) AND provider_message_id = $2
ORDER BY provider`

// FindMessages returns the messages with the provider's message id id (a Twilio
// MessageSid, a Meta wamid) under the provider filter prov: one, or one per named
// sender of prov that used the id. Each is read through the unique key
// (provider, provider_message_id), for each stored name prov matches.
func FindMessages(ctx context.Context, pool *pgxpool.Pool, prov, id string) ([]Message, error) {
	if err := CheckProvider(prov); err != nil {
		return nil, err
	}
	names, err := storedNames(ctx, pool, prov)
	if err != nil {
		return nil, fmt.Errorf("find message: %w", err)
	}
	return messages(ctx, pool, "find message", messagesByID, names, id)
}

// Thread is a conversation with its latest messages, oldest first as a thread reads:
// what the console's conversation page and `inboxd conversations show` print.
type Thread struct {
	Conversation Conversation `json:"conversation"`
	Messages     []Message    `json:"messages"`
	// Earlier: the conversation has messages before the first of Messages, left out
	// by the limit (ListMessages pages through them all).
	Earlier bool `json:"earlier"`
}

// ReadThread returns conversation id with its latest limit messages; an unknown
// conversation is ErrNotFound.
func ReadThread(ctx context.Context, pool *pgxpool.Pool, id int64, limit int) (Thread, error) {
	c, err := FindConversation(ctx, pool, id)
	if err != nil {
		return Thread{}, err
	}
	// One more than limit, newest first, tells whether earlier ones were left out.
	ms, err := pageOfMessages(ctx, pool, MessageFilter{Conversation: id, Desc: true, Limit: limit + 1})
	if err != nil {
		return Thread{}, err
	}
	t := Thread{Conversation: c, Messages: ms, Earlier: len(ms) > limit}
	if t.Earlier {
		t.Messages = ms[:limit]
	}
	slices.Reverse(t.Messages)
	return t, nil
}

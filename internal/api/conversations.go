package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/jsonhttp"
)

// Conversation is one conversation as the API shows it.
type Conversation struct {
	ID             int64     `json:"id"`
	Provider       string    `json:"provider"`
	ChannelAddress string    `json:"channel_address"`
	ContactAddress string    `json:"contact_address"`
	ContactName    *string   `json:"contact_name"`
	CreatedAt      time.Time `json:"created_at"`
	LastMessageAt  time.Time `json:"last_message_at"`
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
}

// Pagination is keyset, never OFFSET: a cursor is the sort key of the last row
// returned, the next page is "rows after that key", read from the index in order.
// A page costs the same however deep it is, and rows inserted meanwhile cannot
// shift what the next page returns (OFFSET would skip or repeat rows). Every list
// fetches limit+1 rows: the extra one says whether there is a next page without a
// count query.
const conversationColumns = `id, provider, channel_address, contact_address, contact_name, created_at, last_message_at`

// listConversations: latest activity first, keyset on (last_message_at, id), which
// the conversations_latest and conversations_contact indexes serve in order.
func listConversations(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := queryConversations(r.Context(), pool, r)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		jsonhttp.Write(w, http.StatusOK, p)
	}
}

func queryConversations(ctx context.Context, pool *pgxpool.Pool, r *http.Request) (page[Conversation], error) {
	sql, args, limit, err := conversationsQuery(r)
	if err != nil {
		return page[Conversation]{}, err
	}
	rows, err := pool.Query(ctx, sql, args...)
	if err != nil {
		return page[Conversation]{}, fmt.Errorf("list conversations: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Conversation])
	if err != nil {
		return page[Conversation]{}, fmt.Errorf("list conversations: %w", err)
	}
	return paginate(list, limit, func(c Conversation) cursor { return cursor{T: c.LastMessageAt, ID: c.ID} }), nil
}

// conversationsQuery builds the list query for the request's filters. Only the
// filters given become conditions, so each query shape gets a plan that uses its
// index rather than one generic plan full of "$n IS NULL OR".
func conversationsQuery(r *http.Request) (sql string, args []any, limit int, err error) {
	if limit, err = limitParam(r); err != nil {
		return "", nil, 0, err
	}
	since, err := timeParam(r, "since")
	if err != nil {
		return "", nil, 0, err
	}
	after, hasCursor, err := cursorParam(r)
	if err != nil {
		return "", nil, 0, err
	}
	provider, err := textParam(r, "provider")
	if err != nil {
		return "", nil, 0, err
	}
	contact, err := textParam(r, "contact")
	if err != nil {
		return "", nil, 0, err
	}
	var where []string
	args = []any{limit + 1}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if provider != "" {
		add("provider = $%d", provider)
	}
	if contact != "" {
		add("contact_address = $%d", contact)
	}
	if !since.IsZero() {
		add("last_message_at >= $%d", since)
	}
	if hasCursor {
		args = append(args, after.T, after.ID)
		where = append(where, fmt.Sprintf("(last_message_at, id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	sql = "SELECT " + conversationColumns + " FROM conversations"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	return sql + " ORDER BY last_message_at DESC, id DESC LIMIT $1", args, limit, nil
}

func getConversation(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := idParam(r)
		if err == nil {
			var c Conversation
			c, err = findConversation(r.Context(), pool, id)
			if err == nil {
				jsonhttp.Write(w, http.StatusOK, c)
				return
			}
		}
		respondErr(log, w, r, err)
	}
}

func findConversation(ctx context.Context, pool *pgxpool.Pool, id int64) (Conversation, error) {
	rows, _ := pool.Query(ctx, "SELECT "+conversationColumns+" FROM conversations WHERE id = $1", id)
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[Conversation])
	if err == pgx.ErrNoRows {
		return Conversation{}, fmt.Errorf("conversation %d: %w", id, errNotFound)
	}
	if err != nil {
		return Conversation{}, fmt.Errorf("get conversation %d: %w", id, err)
	}
	return c, nil
}

// Messages of a conversation by (sent_at, id), ascending unless order=desc; the
// messages_conversation index serves both directions. New messages have later
// sent_at, so a client walking forward meets them on later pages, each once.
const (
	messagesAsc = `
SELECT id, conversation_id, provider, provider_message_id, direction, type, sender, recipient, text, media,
       content, status, status_at, error, sent_at, created_at
FROM messages
WHERE conversation_id = $1 AND (sent_at, id) > ($2, $3)
ORDER BY sent_at, id
LIMIT $4`
	messagesDesc = `
SELECT id, conversation_id, provider, provider_message_id, direction, type, sender, recipient, text, media,
       content, status, status_at, error, sent_at, created_at
FROM messages
WHERE conversation_id = $1 AND (sent_at, id) < ($2, $3)
ORDER BY sent_at DESC, id DESC
LIMIT $4`
)

func listMessages(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := queryMessages(r.Context(), pool, r)
		if err != nil {
			respondErr(log, w, r, err)
			return
		}
		jsonhttp.Write(w, http.StatusOK, p)
	}
}

func queryMessages(ctx context.Context, pool *pgxpool.Pool, r *http.Request) (page[Message], error) {
	id, err := idParam(r)
	if err != nil {
		return page[Message]{}, err
	}
	limit, err := limitParam(r)
	if err != nil {
		return page[Message]{}, err
	}
	after, hasCursor, err := cursorParam(r)
	if err != nil {
		return page[Message]{}, err
	}
	// Without a cursor, the first page starts from a key before (or, descending,
	// after) every row, so one SQL statement per direction serves every page.
	sql, start := messagesAsc, cursor{T: time.Unix(-62135596800, 0), ID: 0} // before any row
	switch r.URL.Query().Get("order") {
	case "", "asc":
	case "desc":
		sql, start = messagesDesc, cursor{T: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), ID: 1<<63 - 1}
	default:
		return page[Message]{}, badParam("order must be asc or desc")
	}
	if hasCursor {
		start = after
	}
	// An unknown conversation is a 404, not an empty page: a client that mistyped
	// an id must be told so.
	if _, err := findConversation(ctx, pool, id); err != nil {
		return page[Message]{}, err
	}
	rows, err := pool.Query(ctx, sql, id, start.T, start.ID, limit+1)
	if err != nil {
		return page[Message]{}, fmt.Errorf("list messages: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Message])
	if err != nil {
		return page[Message]{}, fmt.Errorf("list messages: %w", err)
	}
	return paginate(list, limit, func(m Message) cursor { return cursor{T: m.SentAt, ID: m.ID} }), nil
}

package api

import (
	"context"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/privacy"
	"inboxd/internal/readmodel"
	"inboxd/internal/redact"
)

// The list handlers fetch limit+1 rows: the extra one says whether there is a next
// page without a count query.

// listConversations: latest activity first, keyset on (last_message_at, id).
func listConversations(pool *pgxpool.Pool, policy *redact.Policy, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) { return queryConversations(r.Context(), pool, policy, r) })
}

func queryConversations(ctx context.Context, pool *pgxpool.Pool, policy *redact.Policy, r *http.Request) (page[readmodel.Conversation], error) {
	f, err := conversationFilter(r, policy)
	if err != nil {
		return page[readmodel.Conversation]{}, err
	}
	limit := f.Limit
	f.Limit++
	list, err := readmodel.ListConversations(ctx, pool, f)
	if err != nil {
		return page[readmodel.Conversation]{}, err
	}
	return paginate(list, limit, "conversations", func(c readmodel.Conversation) readmodel.Key {
		return readmodel.Key{T: c.LastMessageAt, ID: c.ID}
	}), nil
}

// conversationFilter reads ?provider=, ?contact=, ?since=, ?cursor= and ?limit=. A
// contact is looked up under every form it may be stored in (its hashes too, when the
// policy hashes addresses), as an erasure finds it.
func conversationFilter(r *http.Request, policy *redact.Policy) (readmodel.ConversationFilter, error) {
	var f readmodel.ConversationFilter
	var err error
	if f.Limit, err = limitParam(r); err != nil {
		return f, err
	}
	if f.Since, err = timeParam(r, "since"); err != nil {
		return f, err
	}
	if f.After, err = cursorParam(r, "conversations"); err != nil {
		return f, err
	}
	if f.Provider, err = textParam(r, "provider"); err != nil {
		return f, err
	}
	contact, err := textParam(r, "contact")
	if err != nil || contact == "" {
		return f, err
	}
	s, err := privacy.NewSubject(contact, f.Provider, policy) // checks the provider too
	f.Contacts = s.Forms
	return f, err
}

func getConversation(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		id, err := idParam(r)
		if err != nil {
			return nil, err
		}
		return readmodel.FindConversation(r.Context(), pool, id)
	})
}

// findMessages: GET /v1/messages?provider=&provider_message_id=, the message a
// provider's id names (a status callback's MessageSid, a Meta wamid), whichever
// conversation holds it.
func findMessages(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) {
		prov, err := textParam(r, "provider")
		if err != nil {
			return nil, err
		}
		id, err := textParam(r, "provider_message_id")
		if err != nil {
			return nil, err
		}
		if prov == "" || id == "" {
			return nil, badParam("provider and provider_message_id are both required: the message a provider's id names, such as ?provider=twilio&provider_message_id=SM…")
		}
		ms, err := readmodel.FindMessages(r.Context(), pool, prov, id)
		if err != nil {
			return nil, err
		}
		return page[readmodel.Message]{Data: ms}, nil
	})
}

// listMessages: a conversation's messages by (sent_at, id), ascending unless
// ?order=desc.
func listMessages(pool *pgxpool.Pool, log *zap.Logger) http.HandlerFunc {
	return respond(log, func(r *http.Request) (any, error) { return queryMessages(r.Context(), pool, r) })
}

func queryMessages(ctx context.Context, pool *pgxpool.Pool, r *http.Request) (page[readmodel.Message], error) {
	var f readmodel.MessageFilter
	var err error
	if f.Conversation, err = idParam(r); err != nil {
		return page[readmodel.Message]{}, err
	}
	if f.Limit, err = limitParam(r); err != nil {
		return page[readmodel.Message]{}, err
	}
	if f.After, err = cursorParam(r, "messages"); err != nil {
		return page[readmodel.Message]{}, err
	}
	switch r.URL.Query().Get("order") {
	case "", "asc":
	case "desc":
		f.Desc = true
	default:
		return page[readmodel.Message]{}, badParam("order must be asc or desc, got %q", clip(r.URL.Query().Get("order")))
	}
	limit := f.Limit
	f.Limit++
	list, err := readmodel.ListMessages(ctx, pool, f)
	if err != nil {
		return page[readmodel.Message]{}, err
	}
	return paginate(list, limit, "messages", func(m readmodel.Message) readmodel.Key {
		return readmodel.Key{T: m.SentAt, ID: m.ID}
	}), nil
}

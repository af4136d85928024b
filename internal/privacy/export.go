package privacy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/readmodel"
)

// Export writes everything held about s as one JSON document:
//
//	{"contact": …, "provider": …, "exported_at": …,
//	 "conversations": [{…conversation, "messages": [{…message}, …]}, …],
//	 "events": [{"id", "provider", "external_id", "state", "received_at",
//	             "processed_at", "payload"}, …],
//	 "pending_statuses": [{…}, …]}
//
// Conversations and messages are as the API serves them; events are the payloads as
// stored (redacted where a rule said so). It reads from one snapshot (a repeatable
// read, read-only transaction), so the parts agree with each other, and streams:
// rows are written as they are read, so memory stays bounded (a few rows and w's
// buffer) however many messages the contact has. An error after the first byte
// leaves the document unfinished, which no JSON reader accepts as complete. records
// is how many conversations, messages, events and parked statuses it wrote: 0 when
// nothing is held about s.
func Export(ctx context.Context, pool *pgxpool.Pool, s Subject, w io.Writer) (records int, err error) {
	bw := bufio.NewWriterSize(w, 32<<10)
	ex := exporter{w: bw, s: s}
	err = pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		ex.tx = tx
		return ex.document(ctx)
	})
	if err != nil {
		return ex.records, fmt.Errorf("export: %w", err)
	}
	return ex.records, bw.Flush()
}

type exporter struct {
	tx      pgx.Tx
	w       *bufio.Writer
	s       Subject
	records int // conversations, messages, events and parked statuses written
}

// put writes a JSON value (after a comma unless first).
func (ex *exporter) put(first bool, v any) error {
	ex.records++
	if !first {
		ex.w.WriteByte(',')
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = ex.w.Write(b)
	return err
}

func (ex *exporter) document(ctx context.Context) error {
	head, _ := json.Marshal(map[string]any{"contact": ex.s.Address, "provider": nullIfEmpty(ex.s.Provider), "exported_at": time.Now().UTC()})
	ex.w.Write(head[:len(head)-1]) // the object stays open
	ex.w.WriteString(`,"conversations":[`)
	if err := ex.conversations(ctx); err != nil {
		return err
	}
	ex.w.WriteString(`],"events":[`)
	if err := ex.stream(ctx, exportEvents, []any{ex.s.Forms, ex.s.Provider}, func(rows pgx.Rows, first bool) error {
		var e exportedEvent
		if err := rows.Scan(&e.ID, &e.Provider, &e.ExternalID, &e.State, &e.ReceivedAt, &e.ProcessedAt, &e.Payload); err != nil {
			return err
		}
		return ex.put(first, e)
	}); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	ex.w.WriteString(`],"pending_statuses":[`)
	if err := ex.stream(ctx, exportParked, []any{ex.s.Forms, ex.s.Provider}, func(rows pgx.Rows, first bool) error {
		var p parkedStatus
		if err := rows.Scan(&p.Provider, &p.ProviderMessageID, &p.EventID, &p.Status, &p.StatusAt, &p.Error); err != nil {
			return err
		}
		return ex.put(first, p)
	}); err != nil {
		return fmt.Errorf("pending statuses: %w", err)
	}
	_, err := ex.w.WriteString("]}\n")
	return err
}

// conversations writes each conversation with its messages. A contact has few
// conversations (one per channel and provider), so they are read first; each one's
// messages are streamed.
func (ex *exporter) conversations(ctx context.Context) error {
	rows, _ := ex.tx.Query(ctx, "SELECT "+readmodel.ConversationColumns+" FROM conversations WHERE id IN ("+subjectConversations+") ORDER BY id",
		ex.s.Forms, ex.s.Provider)
	convs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[readmodel.Conversation])
	if err != nil {
		return fmt.Errorf("conversations: %w", err)
	}
	ex.records += len(convs)
	for i, c := range convs {
		c.MarkRedacted()
		head, _ := json.Marshal(c)
		if i > 0 {
			ex.w.WriteByte(',')
		}
		ex.w.Write(head[:len(head)-1])
		ex.w.WriteString(`,"messages":[`)
		err := ex.stream(ctx, readmodel.MessageColumns+" FROM messages WHERE conversation_id = $1 ORDER BY sent_at, id", []any{c.ID},
			func(rows pgx.Rows, first bool) error {
				m, err := pgx.RowToStructByPos[readmodel.Message](rows)
				if err != nil {
					return err
				}
				m.MarkRedacted()
				return ex.put(first, m)
			})
		if err != nil {
			return fmt.Errorf("messages of conversation %d: %w", c.ID, err)
		}
		ex.w.WriteString("]}")
	}
	return nil
}

// stream runs sql with args and writes each row as it is read (first: the first row).
func (ex *exporter) stream(ctx context.Context, sql string, args []any, write func(rows pgx.Rows, first bool) error) error {
	rows, err := ex.tx.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	first := true
	for rows.Next() {
		if err := write(rows, first); err != nil {
			return err
		}
		first = false
	}
	return rows.Err()
}

const exportEvents = `
SELECT e.id, e.provider, e.external_id, e.state, e.received_at, e.processed_at, e.payload
FROM inbound_events e
WHERE e.id IN (` + subjectEvents + `) AND e.erased_at IS NULL
ORDER BY e.id`

const exportParked = `
SELECT p.provider, p.provider_message_id, p.inbound_event_id, p.status, p.status_at, p.error
FROM pending_statuses p
WHERE p.inbound_event_id IN (` + subjectEvents + `)
ORDER BY p.inbound_event_id`

type exportedEvent struct {
	ID          int64           `json:"id"`
	Provider    string          `json:"provider"`
	ExternalID  string          `json:"external_id"`
	State       string          `json:"state"`
	ReceivedAt  time.Time       `json:"received_at"`
	ProcessedAt *time.Time      `json:"processed_at"`
	Payload     json.RawMessage `json:"payload"`
}

type parkedStatus struct {
	Provider          string          `json:"provider"`
	ProviderMessageID string          `json:"provider_message_id"`
	EventID           int64           `json:"event_id"`
	Status            string          `json:"status"`
	StatusAt          time.Time       `json:"status_at"`
	Error             json.RawMessage `json:"error"`
}

func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

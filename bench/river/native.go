package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"inboxd/internal/ingest"
	"inboxd/internal/processor"
	"inboxd/internal/provider"
)

// The native variant is what someone starting from River would build: River's job
// table is the inbox. A webhook, once verified, is inserted as a job that carries the
// event itself (payload and all), unique by provider and external id so that a
// redelivery is answered as a duplicate; the worker normalizes the job's payload and
// applies it with inboxd's statements. There is no inbound_events row: messages refer
// to their job's id (setupNative drops the foreign keys to inbound_events), and the
// benchmark reads processing times from river_job.finalized_at.
//
// River deduplicates against jobs it still holds: completed jobs are deleted after
// CompletedJobRetentionPeriod (24 hours by default), and a redelivery after that is
// applied again (harmless here: the apply is idempotent).

// NativeArgs is the native job: one stored event.
type NativeArgs struct {
	Provider   string          `json:"provider" river:"unique"` // as stored: "generic" or "generic:<sender>"
	ExternalID string          `json:"external_id" river:"unique"`
	ReceivedAt time.Time       `json:"received_at"`
	Payload    json.RawMessage `json:"payload"`
}

// Kind names the job for River.
func (NativeArgs) Kind() string { return "inbound_event" }

// InsertOpts makes every insert of the kind unique by the fields tagged unique, in
// every state (River's default ByState).
func (NativeArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type nativeWorker struct {
	river.WorkerDefaults[NativeArgs]
	pool        *pgxpool.Pool
	normalizers map[string]provider.Normalizer // registry.Normalizers(), built once
}

// Work applies the job's event in one transaction (a pipelined batch). A payload that
// can never be applied cancels the job (River keeps it, cancelled, with the error);
// anything else is returned for River's retry.
func (w *nativeWorker) Work(ctx context.Context, job *river.Job[NativeArgs]) error {
	normalize, ok := w.normalizers[provider.Base(job.Args.Provider)]
	if !ok {
		return river.JobCancel(fmt.Errorf("no provider %q", job.Args.Provider))
	}
	n, err := normalize(job.Args.Payload, job.Args.ReceivedAt)
	if err != nil {
		if isPermanent(err) {
			return river.JobCancel(err)
		}
		return err
	}
	b := &pgx.Batch{}
	b.Queue(processor.TxSettings(30 * time.Second))
	if err := processor.QueueApply(b, []processor.Applied{{ID: job.ID, Provider: job.Args.Provider, Normalized: n}}); err != nil {
		return err
	}
	err = w.pool.SendBatch(ctx, b).Close()
	if err != nil && isPermanent(err) {
		return river.JobCancel(err)
	}
	return err
}

// setupNative drops the foreign keys from inboxd's tables to inbound_events: in the
// native variant a message's inbound_event_id is its job's id.
func setupNative(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := pool.Exec(ctx, `
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_inbound_event_id_fkey;
ALTER TABLE pending_statuses DROP CONSTRAINT IF EXISTS pending_statuses_inbound_event_id_fkey`)
	if err != nil {
		return fmt.Errorf("drop the foreign keys to inbound_events: %w", err)
	}
	return nil
}

// nativeHook is a webhook endpoint of the native variant: bounded read, the
// provider's own header, signature and parse checks (inboxd's), then the events
// inserted as unique jobs in one durable transaction, answered as inboxd answers
// (ingest.Result: the job ids, and which were duplicates).
func nativeHook(client *river.Client[pgx.Tx], pool *pgxpool.Pool, ep provider.Endpoint) http.HandlerFunc {
	limit := int64(ingest.DefaultMaxBodyBytes)
	if l := ep.Webhook.MaxBodyBytes; l > 0 && l < limit {
		limit = l
	}
	return func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		if err := ep.Webhook.Headers(r.Header); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if err := ep.Webhook.Verify(r, body, now); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		events, err := ep.Webhook.Parse(r, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		params := make([]river.InsertManyParams, len(events))
		for i, ev := range events {
			params[i] = river.InsertManyParams{Args: NativeArgs{
				Provider: provider.Stored(ep.Name, ev.Sender), ExternalID: ev.ExternalID, ReceivedAt: now, Payload: ev.Payload,
			}}
		}
		var inserted []*rivertype.JobInsertResult
		err = pgx.BeginFunc(r.Context(), pool, func(tx pgx.Tx) error {
			inserted, err = client.InsertManyTx(r.Context(), tx, params)
			return err
		})
		if err != nil {
			http.Error(w, "not stored: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		ack := struct {
			Events []ingest.Result `json:"events"`
		}{Events: make([]ingest.Result, len(inserted))}
		for i, res := range inserted {
			ack.Events[i] = ingest.Result{ID: res.Job.ID, Duplicate: res.UniqueSkippedAsDuplicate}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(ack)
	}
}

// enqueueNative turns a drain's backlog (events FillEvents stored in inbound_events)
// into native jobs in bulk, as inserts the webhooks would have made, then empties
// inbound_events: the native variant has no such table.
func enqueueNative(ctx context.Context, client *river.Client[pgx.Tx], pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, "SELECT provider, external_id, received_at, payload FROM inbound_events WHERE state = 'pending' ORDER BY id")
	if err != nil {
		return err
	}
	args, err := pgx.CollectRows(rows, pgx.RowToStructByPos[NativeArgs])
	if err != nil {
		return err
	}
	if len(args) == 0 {
		return errors.New("no pending events to enqueue")
	}
	params := make([]river.InsertManyParams, len(args))
	for i, a := range args {
		params[i] = river.InsertManyParams{Args: a}
	}
	for start := 0; start < len(params); start += 5000 {
		if _, err := client.InsertMany(ctx, params[start:min(start+5000, len(params))]); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
	}
	_, err = pool.Exec(ctx, "TRUNCATE inbound_events CASCADE")
	return err
}

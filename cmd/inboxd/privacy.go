package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/privacy"
	"inboxd/internal/provider/registry"
	"inboxd/internal/redact"
)

// redactionFromEnv builds the redaction policy in force from INBOX_REDACT,
// INBOX_REDACT_DEFAULTS and INBOX_REDACTION_KEY (the service's own parsing), for the
// commands that must see stored data as the service does.
func redactionFromEnv(getenv func(string) string) (*redact.Policy, error) {
	var c config
	for _, o := range options(&c) {
		if !strings.HasPrefix(o.env, envPrefix+"REDACT") {
			continue
		}
		v := o.def
		if e := getenv(o.env); e != "" {
			v = e
		}
		if err := o.set(v); err != nil {
			return nil, usageError{fmt.Errorf("%s: %w", o.env, err)}
		}
	}
	p, err := c.redaction()
	if err != nil {
		return nil, usageError{err}
	}
	return p, nil
}

// subjectFlags are the flags that name a contact.
func subjectFlags(fs *flag.FlagSet) (contact, prov *string) {
	contact = fs.String("contact", "", "the contact's address: a phone number in any usual spelling, or a provider's user id (required)")
	prov = fs.String("provider", "", "only this provider's data: "+strings.Join(registry.Names(), ", ")+" (default all)")
	return contact, prov
}

// contactCommand parses a contact command's flags (fs holds subjectFlags' contact and
// prov), checks the contact under the policy in force before connecting (a typo is
// not a database problem), and connects. The caller closes the pool.
func contactCommand(ctx context.Context, fs *flag.FlagSet, args []string, getenv func(string) string, contact, prov *string) (privacy.Subject, *redact.Policy, *pgxpool.Pool, error) {
	if err := parseFlags(fs, args); err != nil {
		return privacy.Subject{}, nil, nil, err
	}
	if strings.TrimSpace(*contact) == "" {
		return privacy.Subject{}, nil, nil, usageError{errors.New("--contact is required: the contact's phone number in any usual spelling (+15551234567), or a provider's user id")}
	}
	policy, err := redactionFromEnv(getenv)
	if err != nil {
		return privacy.Subject{}, nil, nil, err
	}
	s, err := privacy.NewSubject(*contact, *prov, policy)
	if err != nil {
		return privacy.Subject{}, nil, nil, callerError(err, privacy.ErrBadRequest)
	}
	pool, err := cliPool(ctx, fs, getenv)
	return s, policy, pool, err
}

// eraseCmd erases a contact, or with --dry-run counts what that would remove.
func eraseCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("erase", "Erases everything held about a contact: conversations, messages, parked statuses and the payloads of\ntheir events (kept as tombstones until retention). Prints the receipt. docs/privacy.md has the guarantees.\n  inboxd erase --contact +15551234567 --dry-run", stderr)
	contact, prov := subjectFlags(fs)
	dry := fs.Bool("dry-run", false, "count what would be erased; change nothing")
	s, policy, pool, err := contactCommand(ctx, fs, args, getenv, contact, prov)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *dry {
		c, err := privacy.DryRun(ctx, pool, s)
		if err != nil {
			return dbAdvice(err)
		}
		nothingHeld(stderr, s, c)
		return printJSON(stdout, privacy.NewPreview(s, c))
	}
	e := privacy.NewEraser(pool, zap.NewNop(), policy, cliID("erase"))
	r, err := e.Start(ctx, s)
	if err != nil {
		return dbAdvice(err)
	}
	fmt.Fprintf(stderr, "erasure %d started\n", r.ID)
	if r, err = runUntilDone(ctx, e, r.ID); err != nil {
		return err
	}
	nothingHeld(stderr, s, r.Counts)
	return printJSON(stdout, r)
}

// nothingHeld tells the operator, on stderr, that a contact matched nothing.
func nothingHeld(stderr io.Writer, s privacy.Subject, c privacy.Counts) {
	if c != (privacy.Counts{}) {
		return
	}
	where := ""
	if s.Provider != "" {
		where = " in " + s.Provider + "'s conversations"
	}
	fmt.Fprintf(stderr, "nothing is held about %s%s\n", s.LookedUp(), where)
}

// runUntilDone runs erasures in this process until id is done (another process may be
// running it: then it waits for that one).
func runUntilDone(ctx context.Context, e *privacy.Eraser, id int64) (privacy.Receipt, error) {
	for {
		r, err := e.Find(ctx, id)
		if err != nil || r.State == "done" {
			return r, err
		}
		ran, err := e.RunNext(ctx)
		if err != nil {
			return r, err
		}
		if !ran {
			select {
			case <-ctx.Done():
				return r, ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

// exportCmd prints everything held about a contact as one JSON document.
func exportCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("export", "Prints everything held about a contact as one JSON document (conversations with their messages,\nevent payloads as stored, parked statuses), streamed.\n  inboxd export --contact +15551234567 > export.json", stderr)
	contact, prov := subjectFlags(fs)
	s, _, pool, err := contactCommand(ctx, fs, args, getenv, contact, prov)
	if err != nil {
		return err
	}
	defer pool.Close()
	records, err := privacy.Export(ctx, pool, s, stdout)
	if err != nil {
		return dbAdvice(err)
	}
	if records == 0 { // an empty document, sent on as "we hold nothing", must not hide a mistyped number
		nothingHeld(stderr, s, privacy.Counts{})
	}
	return nil
}

// redactCmd shows what the policy in force does to a payload (--check), or rewrites
// stored payloads under it (--apply).
func redactCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := cliFlags("redact", "Applies the redaction policy in force (INBOX_REDACT, INBOX_REDACT_DEFAULTS, INBOX_REDACTION_KEY):\n  inboxd redact --check --provider twilio --file payload.json   shows what it does to a stored payload (- reads stdin)\n  inboxd redact --apply --before 2026-12-01T00:00:00Z          rewrites the payloads stored before then", stderr)
	check := fs.Bool("check", false, "print the payload as the policy would store it, and the fields it changes; change nothing")
	apply := fs.Bool("apply", false, "rewrite stored payloads under the policy, in batches (idempotent; resumable with --after)")
	prov := fs.String("provider", "", "with --check: the payload's provider: "+strings.Join(registry.Names(), ", ")+" (an event as inboxd events show prints it names its own)")
	file := fs.String("file", "", "with --check: a `file` holding a payload as stored, or an event as inboxd events show prints it, or - for stdin")
	beforeFlag := fs.String("before", "", "with --apply: rewrite events received before this RFC 3339 time (required)")
	after := fs.Int64("after", 0, "with --apply: start after this event id (the last id a stopped run printed)")
	batch := fs.Int("batch", 500, "with --apply: events per transaction")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *check == *apply {
		return usageError{errors.New("give one of --check and --apply")}
	}
	policy, err := redactionFromEnv(getenv)
	if err != nil {
		return err
	}
	if *check {
		return redactCheck(policy, *prov, *file, stdout, stderr)
	}
	before, err := time.Parse(time.RFC3339, *beforeFlag)
	if err != nil {
		return usageError{fmt.Errorf("--before must be an RFC 3339 time such as 2026-12-01T00:00:00Z, got %q", *beforeFlag)}
	}
	if *batch < 1 || *batch > 10000 {
		return usageError{fmt.Errorf("--batch must be from 1 to 10000, got %d", *batch)}
	}
	pool, err := cliPool(ctx, fs, getenv)
	if err != nil {
		return err
	}
	defer pool.Close()
	return redactApply(ctx, pool, policy, before, *after, *batch, stdout, stderr)
}

func redactCheck(policy *redact.Policy, prov, file string, stdout, stderr io.Writer) error {
	var payload []byte
	var err error
	switch file {
	case "":
		return usageError{errors.New("--file is required with --check (- reads stdin)")}
	case "-":
		payload, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20))
	default:
		payload, err = os.ReadFile(file)
	}
	if err != nil {
		return usageError{fmt.Errorf("--file: %w", err)}
	}
	if !json.Valid(payload) {
		return usageError{fmt.Errorf("--file: %s is not JSON: a payload as stored is (a form post is stored as a JSON object of its fields)", file)}
	}
	if ev, ok := shownEvent(payload); ok {
		if prov != "" && prov != ev.Provider {
			return usageError{fmt.Errorf("--provider %s, but %s is event %d of %s: leave --provider out, or give the event's", prov, file, ev.ID, ev.Provider)}
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, ev.Payload); err != nil {
			return usageError{fmt.Errorf("--file: event %d's payload: %w", ev.ID, err)}
		}
		payload, prov = compact.Bytes(), ev.Provider
	}
	if _, err := registry.Lookup(prov); err != nil {
		return usageError{fmt.Errorf("--provider: %w", err)}
	}
	out, changed := policy.Apply(prov, payload)
	if len(changed) == 0 {
		fmt.Fprintln(stderr, "no rule changes this payload")
	} else {
		fmt.Fprintf(stderr, "changed: %s\n", strings.Join(changed, ", "))
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// shownEvent reads a document as `inboxd events show` prints it (external_id and
// received_at mark one): an event whose payload is what the policy applies to. The
// event's own fields would otherwise be taken for the payload, which no rule matches.
func shownEvent(doc []byte) (ev struct {
	ID         int64           `json:"id"`
	Provider   string          `json:"provider"`
	Payload    json.RawMessage `json:"payload"`
	ExternalID json.RawMessage `json:"external_id"`
	ReceivedAt json.RawMessage `json:"received_at"`
}, ok bool) {
	ok = json.Unmarshal(doc, &ev) == nil && ev.ExternalID != nil && ev.ReceivedAt != nil &&
		ev.Provider != "" && len(ev.Payload) > 0 && string(ev.Payload) != "null"
	return ev, ok
}

func redactApply(ctx context.Context, pool *pgxpool.Pool, policy *redact.Policy, before time.Time, after int64, batch int, stdout, stderr io.Writer) error {
	last := time.Now()
	p, err := privacy.Rewrite(ctx, pool, policy, before, after, batch, func(p privacy.RewriteProgress) {
		if time.Since(last) > 2*time.Second {
			fmt.Fprintf(stderr, "scanned %d, rewritten %d, up to event %d\n", p.Scanned, p.Rewritten, p.LastID)
			last = time.Now()
		}
	})
	if err != nil {
		fmt.Fprintf(stderr, "stopped: run again with --after %d to resume\n", p.LastID)
		return dbAdvice(err)
	}
	fmt.Fprintf(stdout, "scanned %d events, rewrote %d payloads (last event %d)\n", p.Scanned, p.Rewritten, p.LastID)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// cliID names a CLI process in leases.
func cliID(command string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), command)
}

package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
	"inboxd/internal/processor"
	"inboxd/internal/provider"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/meta"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/provider/registry"
	"inboxd/internal/provider/twilio"
	"inboxd/internal/readmodel"
	"inboxd/internal/store"
)

// TestSignPrintsValidHeaders: what `inboxd sign` prints verifies as a Standard
// Webhooks signature of its payload.
func TestSignPrintsValidHeaders(t *testing.T) {
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m","channel":"a","contact":"b"}}`)
	file := t.TempDir() + "/payload.json"
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"sign", "--secret", testSecret, "--id", "evt_9", "--file", file, "--headers"},
		func(string) string { return "" }, &out, &out)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		h.Set(k, v)
	}
	ts, err := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if err != nil || h.Get("webhook-id") != "evt_9" {
		t.Fatalf("sign printed %q", out.String())
	}
	if want, _ := generic.Signature(testSecret, "evt_9", ts, body); h.Get("webhook-signature") != want {
		t.Errorf("signature %q, want %q", h.Get("webhook-signature"), want)
	}

	// Twilio and Meta: signed as they sign, over what will be posted.
	form, _ := url.ParseQuery(string(body))
	for _, tc := range []struct{ provider, header, want string }{
		{"twilio", "X-Twilio-Signature", twilio.Sign("meta-secret", "http://localhost:8080/webhooks/twilio", form)},
		{"meta", "X-Hub-Signature-256", meta.Sign("meta-secret", body)},
	} {
		out.Reset()
		err := run(context.Background(), []string{"sign", "--provider", tc.provider, "--secret", "meta-secret", "--file", file, "--headers"},
			func(string) string { return "" }, &out, &out)
		got, _ := strings.CutPrefix(strings.TrimSpace(out.String()), tc.header+": ")
		if err != nil || got == "" || got != tc.want {
			t.Errorf("sign --provider %s: %v %q, want %s %s", tc.provider, err, out.String(), tc.header, tc.want)
		}
	}

	out.Reset()
	err = run(context.Background(), []string{"sign", "--id", "evt_9"}, func(k string) string {
		return map[string]string{"INBOX_GENERIC_SECRETS": testSecret, "INBOX_PUBLIC_URL": "https://inbox.example.com"}[k]
	}, &out, &out)
	if err != nil || !strings.HasPrefix(out.String(), "curl -sS https://inbox.example.com/webhooks/generic ") {
		t.Errorf("sign with env: %v %q, want a curl line to INBOX_PUBLIC_URL", err, out.String())
	}
	if err := run(context.Background(), []string{"sign"}, func(string) string { return "" }, &out, &out); err == nil {
		t.Error("sign without a secret succeeded")
	}
	// A setting that only checks signatures is not taken to make one: Telnyx's public
	// key (32 bytes, as a seed is) signed requests its own service refused; a generic
	// public key says it cannot sign.
	publicKey := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, c := range []struct {
		provider string
		env      map[string]string
		want     string
	}{
		{"telnyx", map[string]string{"INBOX_TELNYX_PUBLIC_KEY": publicKey}, "--secret is required for telnyx: its settings hold public keys"},
		{"generic", map[string]string{"INBOX_GENERIC_SECRETS": "whpk_" + publicKey}, "INBOX_GENERIC_SECRETS's first value cannot sign: "},
		// A named sender signs with its own key, which must be there and able to sign.
		{"generic:gamma", map[string]string{"INBOX_GENERIC_SENDERS": "acme:" + testSecret + ", beta:" + testSecret}, `INBOX_GENERIC_SENDERS names no sender "gamma"; it names acme, beta`},
		{"generic:acme", map[string]string{"INBOX_GENERIC_SENDERS": "acme:whpk_" + publicKey}, "sender acme's key cannot sign: "},
		{"generic:acme", nil, `INBOX_GENERIC_SENDERS is not set, so there is no sender "acme"`},
		{"generic", map[string]string{"INBOX_GENERIC_SENDERS": "acme:" + testSecret}, "no secret: pass --secret, set INBOX_GENERIC_SECRETS, or name a sender: --provider generic:NAME"},
		{"twilio:acme", map[string]string{"INBOX_TWILIO_AUTH_TOKEN": "a-token"}, "--provider twilio:acme: twilio has no named senders"},
	} {
		out.Reset()
		err := run(context.Background(), []string{"sign", "--provider", c.provider}, func(k string) string { return c.env[k] }, &out, &out)
		if !isUsage(err) || !strings.Contains(err.Error(), c.want) || out.Len() > 0 {
			t.Errorf("sign --provider %s with %v: %v %q, want a usage error saying %q", c.provider, c.env, err, &out, c.want)
		}
	}
	// --provider generic:acme signs with acme's key in INBOX_GENERIC_SENDERS, not
	// with the shared secret.
	acme := "whsec_" + base64.StdEncoding.EncodeToString([]byte("acme's own 24-byte key!!"))
	out.Reset()
	err = run(context.Background(), []string{"sign", "--provider", "generic:acme", "--id", "evt_a", "--file", file, "--headers"}, func(k string) string {
		return map[string]string{"INBOX_GENERIC_SECRETS": testSecret, "INBOX_GENERIC_SENDERS": "beta:" + testSecret + ",acme:" + acme}[k]
	}, &out, &out)
	h = http.Header{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		h.Set(k, v)
	}
	ts, _ = strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if want, _ := generic.Signature(acme, "evt_a", ts, body); err != nil || h.Get("webhook-signature") != want {
		t.Errorf("sign --provider generic:acme: %v %q, want the signature of acme's key %s", err, &out, want)
	}
	for _, p := range registry.All {
		if p.SignWith != "" && !slices.ContainsFunc(p.Settings, func(s provider.Setting) bool { return s.Key == p.SignWith }) {
			t.Errorf("provider %s signs with %q, which is not one of its settings", p.Name, p.SignWith)
		}
	}
	if err := run(context.Background(), []string{"sign", "--secret", testSecret, "--file", file + ".missing"}, func(string) string { return "" }, &out, &out); !isUsage(err) || !strings.HasPrefix(err.Error(), "--file: ") {
		t.Errorf("sign --file of a missing file: %v, want a usage error naming --file", err)
	}

	// --url may be the base or the webhook itself, but not another provider's webhook.
	for _, u := range []string{"https://inbox.example.com/", "https://inbox.example.com/webhooks/generic", "https://inbox.example.com/webhooks/generic/"} {
		out.Reset()
		err := run(context.Background(), []string{"sign", "--secret", testSecret, "--url", u}, func(string) string { return "" }, &out, &out)
		if err != nil || !strings.HasPrefix(out.String(), "curl -sS https://inbox.example.com/webhooks/generic ") {
			t.Errorf("sign --url %s: %v %q, want a curl line to https://inbox.example.com/webhooks/generic", u, err, out.String())
		}
	}
	out.Reset()
	err = run(context.Background(), []string{"sign", "--secret", testSecret, "--url", "https://inbox.example.com/webhooks/meta"}, func(string) string { return "" }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "pass inboxd's base URL (https://inbox.example.com)") {
		t.Errorf("sign --url <meta's webhook> for generic: %v %q, want a refusal giving the base URL", err, out.String())
	}
}

// TestStatsAndEventsCommands: the operator's CLI views of the queue.
func TestStatsAndEventsCommands(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	_, err := pool.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, state, last_error)
VALUES ('generic', 'a', '{}', 'processed', NULL), ('twilio', 'b', '{}', 'dead', 'it broke'), ('twilio', 'c', '{}', 'pending', NULL);
UPDATE inbound_events SET lane = 'twilio/+15550001111' WHERE external_id = 'c'`)
	if err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"DATABASE_URL": url}[k] }
	var out bytes.Buffer
	if err := run(context.Background(), []string{"stats"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dead", "pending", "processed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stats output lacks %s:\n%s", want, out.String())
		}
		if !regexp.MustCompile(`(?m)^\s*` + want + `\s+1\s`).MatchString(out.String()) {
			t.Errorf("stats does not count one %s event:\n%s", want, out.String())
		}
	}
	// The lanes with pending events follow, with their backlog.
	if !regexp.MustCompile(`(?m)^twilio/\+15550001111\s+1\s+\d`).MatchString(out.String()) {
		t.Errorf("stats does not show the pending event's lane:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"events", "--state", "dead"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "it broke") || !strings.Contains(lines[1], "twilio") {
		t.Errorf("events --state dead:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"events", "--json"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var e struct{ ID int64 }
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.ID == 0 || i >= 3 {
			t.Errorf("events --json line %d: %q (%v), want one event per line", i, line, err)
		}
	}

	// A list cut at --limit says so on stderr, with the next page's flag; the next
	// page, and a list that fits, say nothing.
	var ids []int64
	if err := pool.QueryRow(context.Background(), `SELECT array_agg(id ORDER BY id) FROM inbound_events`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', '+15550001111', '+15550002222', now()), ('generic', '+15550001111', '+15550003333', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args   []string
		rows   int
		stderr string
	}{
		{[]string{"events", "--limit", "2"}, 2, fmt.Sprintf("more events: the next page is --before %d (with the same filters)\n", ids[1])},
		{[]string{"events", "--limit", "2", "--before", fmt.Sprint(ids[1])}, 1, ""},
		{[]string{"events", "--limit", "3"}, 3, ""},
		{[]string{"events", "--limit", "1", "--json"}, 1, fmt.Sprintf("more events: the next page is --before %d (with the same filters)\n", ids[2])},
		{[]string{"conversations", "--limit", "1"}, 1, "more conversations: these are the 1 with the latest activity; raise --limit, or narrow with --contact or --provider\n"},
		{[]string{"conversations", "--limit", "2"}, 2, ""},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), c.args, getenv, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		rows := strings.Count(stdout.String(), "\n")
		if !slices.Contains(c.args, "--json") {
			rows-- // the header
		}
		if rows != c.rows || stderr.String() != c.stderr {
			t.Errorf("%v: %d rows, stderr %q; want %d rows, stderr %q:\n%s", c.args, rows, &stderr, c.rows, c.stderr, &stdout)
		}
	}
}

// TestEventsShowAndConversations: `inboxd events show ID` shows that event in full
// (not a list), with the message it became; `inboxd conversations --contact` finds a
// contact however the number is typed, "+" included.
func TestEventsShowAndConversations(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-show","channel":"+15550001111","contact":"+15551234567","text":"show me"}}`)
	status, _, ack := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-show", body, time.Now()))
	if status != 200 {
		t.Fatalf("webhook: %d %s", status, ack)
	}
	settle(t, pool)
	var id int64
	pool.QueryRow(context.Background(), "SELECT id FROM inbound_events WHERE external_id = 'evt-show'").Scan(&id)
	getenv := func(k string) string {
		return map[string]string{"DATABASE_URL": pool.Config().ConnString()}[k]
	}
	var out bytes.Buffer
	// The flags may follow the id: here the database is given only after it.
	if err := run(context.Background(), []string{"events", "show", fmt.Sprint(id), "--database-url", pool.Config().ConnString()},
		func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	var shown struct {
		ID      int64
		Payload json.RawMessage
		Message struct{ Text string }
		Meaning string
	}
	if err := json.Unmarshal(out.Bytes(), &shown); err != nil || shown.ID != id || shown.Message.Text != "show me" || len(shown.Payload) == 0 {
		t.Errorf("events show %d = %s (%v), want that event with its payload and message", id, out.String(), err)
	}
	if err := run(context.Background(), []string{"events", "show", "999999"}, getenv, &out, &out); err == nil || !strings.Contains(err.Error(), "event 999999: not found (`inboxd events` lists them)") {
		t.Errorf("events show of an unknown id = %v, want an error saying so", err)
	}
	// Did inboxd get a delivery? Its provider's id finds it.
	for _, c := range []struct {
		provider string
		lines    int
		id       string
	}{{"generic", 2, "evt-show"}, {"twilio", 1, "evt-show"}, {"generic", 1, "evt-other"}} {
		out.Reset()
		if err := run(context.Background(), []string{"events", "--provider", c.provider, "--external-id", c.id}, getenv, &out, &out); err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != c.lines || (c.lines == 2 && !strings.Contains(lines[1], "evt-show")) {
			t.Errorf("events --provider %s --external-id %s:\n%s\nwant %d lines", c.provider, c.id, out.String(), c.lines)
		}
	}
	if err := run(context.Background(), []string{"events", "--external-id", "evt-show"}, getenv, &out, &out); err == nil || !strings.Contains(err.Error(), "choose the provider too") {
		t.Errorf("events --external-id without --provider = %v, want a usage error asking for it", err)
	}
	for _, contact := range []string{"+15551234567", " 15551234567", "15551234567", "+1 (555) 123-4567"} {
		out.Reset()
		if err := run(context.Background(), []string{"conversations", "--contact", contact}, getenv, &out, &out); err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "+15551234567") {
			t.Errorf("conversations --contact %q:\n%s", contact, out.String())
		}
	}

	// `inboxd conversations show ID`: the conversation and its latest messages, oldest
	// first, each on one line; cut at --limit, it says earlier ones are left out.
	body = []byte(`{"type":"message.received","timestamp":"2026-11-25T10:01:00Z","data":{"message_id":"m-show-2","channel":"+15550001111","contact":"+15551234567","text":"and\nthen"}}`)
	if status, _, ack := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-show-2", body, time.Now())); status != 200 {
		t.Fatalf("webhook: %d %s", status, ack)
	}
	settle(t, pool)
	var conversation int64
	pool.QueryRow(context.Background(), "SELECT conversation_id FROM messages WHERE provider_message_id = 'm-show'").Scan(&conversation)
	for _, c := range []struct {
		args           []string
		lines          []string
		stderr, absent string
	}{
		{[]string{"--limit", "2"}, []string{"contact +15551234567", "show me", "and then"}, "", ""},
		{[]string{"--limit", "1"}, []string{"contact +15551234567", "and then"}, fmt.Sprintf("earlier messages: these are the latest 1; raise --limit, or page through them all with GET /v1/conversations/%d/messages\n", conversation), "show me"},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), append([]string{"conversations", "show", fmt.Sprint(conversation)}, c.args...), getenv, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		last := -1
		for _, line := range c.lines {
			at := strings.Index(stdout.String(), line)
			if at <= last {
				t.Errorf("conversations show %v does not show %q after what came before:\n%s", c.args, line, &stdout)
			}
			last = at
		}
		if stderr.String() != c.stderr || (c.absent != "" && strings.Contains(stdout.String(), c.absent)) {
			t.Errorf("conversations show %v: stderr %q, want %q; shows %q: %v\n%s", c.args, &stderr, c.stderr, c.absent, c.absent != "" && strings.Contains(stdout.String(), c.absent), &stdout)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"conversations", "show", fmt.Sprint(conversation), "--json"}, getenv, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var thread readmodel.Thread
	if err := json.Unmarshal(out.Bytes(), &thread); err != nil || thread.Conversation.ID != conversation || len(thread.Messages) != 2 ||
		*thread.Messages[0].Text != "show me" || *thread.Messages[1].Text != "and\nthen" || thread.Earlier {
		t.Errorf("conversations show --json = %s (%v), want the conversation and its two messages, oldest first, text whole", &out, err)
	}
	if err := run(context.Background(), []string{"conversations", "show", "999999"}, getenv, &out, &out); err == nil || !strings.Contains(err.Error(), "conversation 999999: not found (`inboxd conversations` lists them)") {
		t.Errorf("conversations show of an unknown id = %v, want an error saying so", err)
	}
}

// TestHelpListsCommands: `inboxd help` and `inboxd --help` list every command and
// what it does; a bare `inboxd` serves and says where the list is.
func TestHelpListsCommands(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, func(string) string { return "" }, &out, &out); err != nil {
			t.Fatalf("inboxd %v: %v", args, err)
		}
		for _, c := range commands() {
			if !strings.Contains(out.String(), c.name) || !strings.Contains(out.String(), c.summary) {
				t.Errorf("inboxd %v does not list %s with what it does:\n%s", args, c.name, out.String())
			}
		}
	}
	// A command with verbs says so in its usage line when asked without one.
	var sub bytes.Buffer
	_ = run(context.Background(), []string{"subscriptions", "--help"}, func(string) string { return "" }, &sub, &sub)
	if !strings.HasPrefix(sub.String(), "usage: inboxd subscriptions [VERB [ID]] [flags]\n") {
		t.Errorf("inboxd subscriptions --help does not say it takes a verb:\n%s", sub.String())
	}
	var out bytes.Buffer
	env := map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/inboxd?sslmode=disable"}
	_ = run(context.Background(), nil, func(k string) string { return env[k] }, &out, &out)
	if !strings.Contains(out.String(), "inboxd help") {
		t.Errorf("a bare inboxd does not say where the commands are listed:\n%s", out.String())
	}
}

// TestFlagHelp: every command's --help lists each flag with its argument named in one
// word ("-file file"). The flag package takes the first back-quoted word of a usage
// string as that name, so a back-quoted command in a flag's text ("as `inboxd events
// show` prints it") became the argument's name.
func TestFlagHelp(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  -(\S+)(.*)$`)
	for _, c := range commands() {
		if c.name == "help" {
			continue
		}
		var out bytes.Buffer
		_ = run(context.Background(), []string{c.name, "--help"}, func(string) string { return "" }, &out, &out)
		flags := flagLine.FindAllStringSubmatch(out.String(), -1)
		settings := strings.Contains(out.String(), "--database-url  ") // serve, migrate and check print the settings' table
		if len(flags) == 0 && !settings {
			t.Errorf("inboxd %s --help lists no flags:\n%s", c.name, out.String())
		}
		if settings && !strings.Contains(out.String(), "inboxd "+c.name+": "+c.summary) { // the table alone would not say what the command does
			t.Errorf("inboxd %s --help does not say what it does:\n%s", c.name, out.String())
		}
		for _, f := range flags {
			if arg := strings.TrimSpace(f[2]); strings.Contains(arg, " ") {
				t.Errorf("inboxd %s --help: -%s takes %q, want one word", c.name, f[1], arg)
			}
		}
	}
}

// TestUsageErrors: a mistake in how a command was called is a usage error (exit 2)
// that says what was wrong, found before any connection is made.
func TestUsageErrors(t *testing.T) {
	env := map[string]string{"DATABASE_URL": "postgres://postgres@127.0.0.1:1/inboxd?sslmode=disable"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"event"}, `unknown command "event"; did you mean events?`},
		{[]string{"stats", "--watch", "--interval", "0s"}, "at least 100ms"},
		{[]string{"export"}, "--contact is required"},
		{[]string{"export", "--contact", strings.Repeat("9", 300)}, "contact is 300 bytes"},
		{[]string{"erase", "--contact", " ", "--dry-run"}, "--contact is required"},
		{[]string{"ex"}, "did you mean export?"},
		{[]string{"subscription", "list"}, "did you mean subscriptions?"},
		{[]string{"stats", "--bogus"}, "bogus"},
		{[]string{"events", "--state", "stuck"}, "pending, processing, processed, dead"},
		{[]string{"events", "--provider", "twillio"}, "generic, twilio, meta, telnyx"},
		{[]string{"events", "show"}, "one event id"},
		{[]string{"events", "show", "x"}, `"x"`},
		{[]string{"events", "show", "0"}, `"0" is not a positive whole number`},
		{[]string{"conversations", "--provider", "twillio"}, "generic, twilio, meta, telnyx"},
		{[]string{"conversations", "--limit", "0"}, "--limit must be at least 1"},
		{[]string{"conversations", "show"}, "give one conversation id"},
		{[]string{"conversations", "show", "1", "2"}, "give one conversation id"},
		{[]string{"conversations", "show", "0"}, `"0" is not a positive whole number`},
		{[]string{"conversations", "show", "1", "--limit", "0"}, "--limit must be at least 1"},
		{[]string{"redact"}, "give one of --check and --apply"},
		{[]string{"redact", "--check", "--apply"}, "give one of --check and --apply"},
		{[]string{"redact", "--apply"}, "--before must be an RFC 3339 time"},
		{[]string{"redact", "--apply", "--before", "2026-12-01T00:00:00Z", "--batch", "0"}, "--batch must be from 1 to 10000"},
		{[]string{"redact", "--apply", "--before", "2026-12-01T00:00:00Z", "--batch", "10001"}, "--batch must be from 1 to 10000"},
		{[]string{"redact", "--check", "--provider", "generic"}, "--file is required"},
		{[]string{"redact", "--check", "--provider", "generic", "--file", os.DevNull}, "is not JSON"},
		{[]string{"events", "show", "1", "2"}, "one event id"},
		{[]string{"events", "replay", "0"}, `"0" is not a positive whole number`},
		{[]string{"events", "replay", "--state", "dead", "5"}, "not both"},
		{[]string{"subscriptions", "show", "0"}, "needs a subscription id"},
		{[]string{"subscriptions", "create", "--url", "https://crm.example.com/hooks"}, "create needs --url and --types"},
		{[]string{"sign", "--provider", "twillio"}, "generic, twilio, meta, telnyx"},
		{[]string{"events", "--limit", "0"}, "limit"},
		{[]string{"events", "--provider", "a\x00b"}, "must be one of"},
		{[]string{"events", "replay"}, "--state dead"},
		{[]string{"events", "replay", "x1"}, `"x1"`},
		{[]string{"events", "replay", "--state", "pending"}, "dead or processed"},
		{[]string{"tail", "--provider", strings.Repeat("p", 300)}, "generic, twilio"},
		{[]string{"serve", "--workers", "0"}, "INBOX_WORKERS"},
		// An argument where only flags go is refused, not ignored with the flags after it.
		{[]string{"conversations", "extra"}, `unexpected argument "extra": ` + "`inboxd conversations` takes flags only"},
		{[]string{"conversations", "+15551234567", "--provider", "twilio"}, "a contact goes in --contact"},
		{[]string{"erase", "+15551234567", "--dry-run"}, "a contact goes in --contact"},
		{[]string{"events", "dead"}, `unexpected argument "dead"`},
		{[]string{"stats", "--watch", "x"}, `unexpected argument "x"`},
		{[]string{"tail", "x"}, `unexpected argument "x"`},
		{[]string{"sign", "evt_1"}, `unexpected argument "evt_1"`},
		{[]string{"migrate", "x"}, "`inboxd migrate` takes flags only"},
		{[]string{"serve", "x", "--workers", "4"}, "`inboxd serve` takes flags only"},
		{[]string{"subscriptions", "list", "x"}, "`inboxd subscriptions list` takes flags only"},
		{[]string{"subscriptions", "pause", "1", "2"}, "takes one subscription id, got 2"},
		// Flags after an argument are read: --state is a flag here, not an event id.
		{[]string{"events", "replay", "5", "--state", "dead"}, "not both"},
		{[]string{"events", "replay", "--", "5", "--state"}, `"--state" is not a positive whole number`},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, func(k string) string { return env[k] }, &out, &out)
		var usage usageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "bad request") {
			t.Errorf("inboxd %q = %v, want a usage error mentioning %s (and not the API's \"bad request\")", tc.args, err, tc.want)
		}
	}
}

// TestEventsReplay: `inboxd events replay` requeues the given events, or those in a
// state (without --limit, more than one), and leaves the others alone, saying why;
// an id of no event (a typo) is named and the command fails, after replaying the rest.
func TestEventsReplay(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO inbound_events (provider, external_id, payload, state, erased_at)
VALUES ('generic', 'a', '{}', 'dead', NULL), ('generic', 'b', '{}', 'dead', NULL), ('twilio', 'c', '{}', 'dead', NULL),
       ('generic', 'd', '{}', 'pending', NULL), ('generic', 'e', '{}', 'dead', NULL), ('generic', 'f', '{}', 'processed', now())`); err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"DATABASE_URL": url}[k] }
	for _, tc := range []struct {
		args    []string
		want    string
		wantErr string
	}{
		{args: []string{"events", "replay", "1", "4", "6"},
			want: "replayed 1 event\nleft alone: 4 (pending: on its way already), 6 (erased: nothing is left to apply)"},
		{args: []string{"events", "replay", "99", "2", "98", "99"}, want: "replayed 1 event",
			wantErr: "no event has the id 98 or 99 (`inboxd events` lists them)"},
		{args: []string{"events", "replay", "--state", "dead", "--provider", "twilio"}, want: "replayed 1 event"},
		{args: []string{"events", "replay", "--state", "dead"}, want: "replayed 1 event"}, // without --limit: up to 1,000
		{args: []string{"events", "replay", "--state", "dead"}, want: "replayed 0 events"},
	} {
		var out bytes.Buffer
		err := run(ctx, tc.args, getenv, &out, &out)
		if got := strings.TrimSpace(out.String()); got != tc.want || fmt.Sprint(err) != cmp.Or(tc.wantErr, "<nil>") {
			t.Errorf("inboxd %q: %v %q, want %q and %s", tc.args, err, got, tc.want, cmp.Or(tc.wantErr, "no error"))
		}
	}
	var pending int
	pool.QueryRow(ctx, "SELECT count(*) FROM inbound_events WHERE state = 'pending'").Scan(&pending)
	if pending != 5 {
		t.Errorf("%d events pending after the replays, want 5", pending)
	}
}

// TestMigrateSaysWhatItApplied: `inboxd migrate` names the migrations it applied, and
// says when there was nothing to do.
func TestMigrateSaysWhatItApplied(t *testing.T) {
	t.Parallel()
	url := pgtest.NewEmptyDB(t)
	getenv := func(k string) string { return map[string]string{"DATABASE_URL": url}[k] }
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "applied 001_inbound_events.sql, 002_") {
		t.Errorf("first migrate said %q, want the list of what it applied", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"migrate"}, getenv, &out, &out); err != nil || !strings.Contains(out.String(), "nothing to apply") {
		t.Errorf("second migrate: %v %q, want nothing to apply", err, out.String())
	}

	// A newer inboxd migrated further: this binary applies nothing, says so, and a
	// service of it still starts (a rolling upgrade, or a rollback).
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `UPDATE `+store.VersionTable+` SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"migrate"}, getenv, &out, &out); err != nil || !strings.Contains(out.String(), "nothing to apply: the database schema is newer than this binary") {
		t.Errorf("migrate on a newer schema: %v %q, want nothing to apply, saying why", err, out.String())
	}
	pool, err := openDatabase(context.Background(), config{Migrate: true, ListenURL: url, DatabaseURL: url}, zap.NewNop())
	if err != nil {
		t.Fatalf("a service on a newer schema: %v, want it to start", err)
	}
	pool.Close()
}

// TestCommandsOnAnUnsetDatabase: stats, events, events replay and tail on a database
// that does not exist, or was never migrated, say to run `inboxd migrate`.
func TestCommandsOnAnUnsetDatabase(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]string{
		"missing":    pgtest.DatabaseURL("inboxd_does_not_exist"),
		"unmigrated": pgtest.NewEmptyDB(t),
	} {
		getenv := func(k string) string { return map[string]string{"DATABASE_URL": url}[k] }
		for _, cmd := range []string{"stats", "events", "events replay --state dead", "events replay 1", "tail"} {
			var out bytes.Buffer
			err := run(context.Background(), strings.Fields(cmd), getenv, &out, &out)
			if err == nil || !strings.Contains(err.Error(), "inboxd migrate") {
				t.Errorf("inboxd %s on a %s database: %v, want advice to run inboxd migrate", cmd, name, err)
			}
		}
	}
}

// TestStatsWatch redraws in place until interrupted: it is interrupted once it has
// written three lines (or after a minute, on a machine too busy to say anything).
func TestStatsWatch(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewPool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := &linesThenCancel{want: 3, cancel: cancel}
	err := run(ctx, []string{"stats", "--watch", "--interval", "100ms"}, func(k string) string {
		return map[string]string{"DATABASE_URL": url}[k]
	}, out, out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if strings.Contains(out.String(), "\x1b") || len(lines) < 3 {
		t.Fatalf("--watch to a buffer wrote %q, want plain lines (no escapes), one per interval", out.String())
	}
	for _, l := range lines {
		if !strings.Contains(l, "pending=0") || !strings.Contains(l, "dead=0") {
			t.Errorf("--watch line %q, want every state's count", l)
		}
	}
}

// TestCLIStripsControlCharacters: what a provider or a client put in an event (an
// external id, an error) reaches the operator's terminal without its control
// characters: no escape sequence can repaint it.
func TestCLIStripsControlCharacters(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	_, err := pool.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, state, last_error)
VALUES ('generic', E'evil\x1b[2J\x1b]0;pwned\x07id', '{}', 'dead', E'broke\x1b[31m red');
INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
VALUES ('generic', E'ours\x1b[2J', E'them\x1b]0;pwned\x07', now())`)
	if err != nil {
		t.Fatal(err)
	}
	getenv := func(k string) string { return map[string]string{"DATABASE_URL": url}[k] }
	var out bytes.Buffer
	if err := run(context.Background(), []string{"events", "--state", "dead"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), "evil[2J]0;pwnedid") {
		t.Errorf("events printed %q, want the id without its control characters", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"conversations"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String(), "\x1b\x07") || !strings.Contains(out.String(), "ours[2J") || !strings.Contains(out.String(), "them]0;pwned") {
		t.Errorf("conversations printed %q, want the addresses without their control characters", out.String())
	}
}

// linesThenCancel is a buffer that calls cancel once want lines were written.
type linesThenCancel struct {
	bytes.Buffer
	want   int
	cancel func()
}

func (w *linesThenCancel) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if strings.Count(w.String(), "\n") >= w.want {
		w.cancel()
	}
	return n, err
}

// TestStatsPrinting: an estimated count is marked "~" in the table and in --watch's
// lines; an empty state's oldest is "-", not an age, in both; a row that sums several lanes
// says how many; the line names the busiest lane, but not "other", which is no lane.
func TestStatsPrinting(t *testing.T) {
	states := []processor.QueueState{{State: "pending", Count: 3, Exact: true, OldestAge: 1500 * time.Millisecond}, {State: "processed", Count: 90000}}
	var out bytes.Buffer
	printQueue(&out, append(states, processor.QueueState{State: "dead", Exact: true}))
	printLanes(&out, []processor.LaneState{{Lane: "meta/100", Lanes: 1, Pending: 3}, {Lane: "other", Lanes: 12, Pending: 40}})
	if !regexp.MustCompile(`pending\s+3\s+1\.5s`).MatchString(out.String()) || !strings.Contains(out.String(), "~90000") ||
		!regexp.MustCompile(`dead\s+0\s+-`).MatchString(out.String()) || !strings.Contains(out.String(), "other (12 lanes)") {
		t.Errorf("stats printed:\n%s\nwant pending 3 1.5s, processed ~90000, dead 0 - and other (12 lanes)", out.String())
	}
	out.Reset()
	printLanes(&out, nil)
	if out.Len() != 0 {
		t.Errorf("no lanes printed %q, want nothing (no empty table)", out.String())
	}
	at := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	for lanes, want := range map[string]string{"meta/100": " busiest_lane=meta/100 busiest_lane_pending=3", "other": ""} {
		out.Reset()
		printQueueLine(&out, at, append(states, processor.QueueState{State: "dead", Exact: true}), []processor.LaneState{{Lane: lanes, Lanes: 1, Pending: 3}})
		line := "2026-12-06T08:00:00Z pending=3 oldest_pending=1.5s processed~90000 oldest_processed=0s dead=0 oldest_dead=-" + want + "\n"
		if out.String() != line {
			t.Errorf("--watch line %q, want %q", out.String(), line)
		}
	}
}

// TestOneLine: `conversations show` prints a message's text on one line, cut at 80
// characters, and names the type of a message without text.
func TestOneLine(t *testing.T) {
	text := func(s string) *string { return &s }
	long := strings.Repeat("é", 100)
	for _, c := range []struct {
		m    readmodel.Message
		want string
	}{
		{readmodel.Message{Type: "text", Text: text("hi")}, "hi"},
		{readmodel.Message{Type: "text", Text: text(" line one\r\n\tline\x1b[31m two ")}, "line one line [31m two"},
		{readmodel.Message{Type: "image"}, "(image)"},
		{readmodel.Message{Type: "text", Text: text(long)}, strings.Repeat("é", 79) + "…"},
		{readmodel.Message{Type: "text", Text: text(long[:160])}, long[:160]},
	} {
		if got := oneLine(c.m); got != c.want {
			t.Errorf("oneLine(%+v) = %q, want %q", c.m, got, c.want)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
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
	h := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		h[k] = v
	}
	ts, err := strconv.ParseInt(h["webhook-timestamp"], 10, 64)
	if err != nil || h["webhook-id"] != "evt_9" {
		t.Fatalf("sign printed %q", out.String())
	}
	keys, _ := ingest.ParseGenericSecrets([]string{testSecret})
	if want := ingest.SignGeneric(keys[0], "evt_9", ts, body); h["webhook-signature"] != want {
		t.Errorf("signature %q, want %q", h["webhook-signature"], want)
	}

	// Twilio and Meta: signed as they sign, over what will be posted.
	form, _ := url.ParseQuery(string(body))
	for _, tc := range []struct{ provider, header, want string }{
		{"twilio", "X-Twilio-Signature", ingest.SignTwilio("meta-secret", "http://localhost:8080/webhooks/twilio", form)},
		{"meta", "X-Hub-Signature-256", ingest.SignMeta("meta-secret", body)},
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
}

// TestStatsAndEventsCommands: the operator's CLI views of the queue.
func TestStatsAndEventsCommands(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	_, err := pool.Exec(context.Background(), `INSERT INTO inbound_events (provider, external_id, payload, state, last_error)
VALUES ('generic', 'a', '{}', 'processed', NULL), ('twilio', 'b', '{}', 'dead', 'it broke'), ('twilio', 'c', '{}', 'pending', NULL)`)
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
	out.Reset()
	if err := run(context.Background(), []string{"events", "--state", "dead"}, getenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "it broke") || !strings.Contains(lines[1], "twilio") {
		t.Errorf("events --state dead:\n%s", out.String())
	}
}

// An unknown bench mode is refused before the bench database is dropped and made
// again: the URL here points nowhere, so touching it would fail differently.
func TestBenchUnknownModeTouchesNothing(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"bench", "warp", "--database-url", "postgres://nobody@127.0.0.1:1/x"},
		func(string) string { return "" }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `unknown bench mode "warp"`) {
		t.Errorf("bench warp = %v, want the unknown-mode error", err)
	}
}

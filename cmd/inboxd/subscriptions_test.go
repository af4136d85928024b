package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"inboxd/internal/delivery"
	"inboxd/internal/delivery/deliverytest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// TestSubscriptionsCommand: `inboxd subscriptions` makes a subscription that the
// running service delivers to (the wiring: the processor's commits wake the
// deliverer), lists it, shows its deliveries, and refuses mistakes with exit 2 and a
// reason: a private URL without the setting, a replay without --from, an unknown
// subcommand, a missing id.
func TestSubscriptionsCommand(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	env := map[string]string{"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_DELIVERY_ALLOW_PRIVATE": "true"}
	base, _ := startServe(t, env)
	rc := deliverytest.New(t)
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	usage := func(err error) bool { var u usageError; return errors.As(err, &u) }

	delete(env, "INBOX_DELIVERY_ALLOW_PRIVATE")
	if out, err := cli("subscriptions", "create", "--url", rc.URL, "--types", "message.created"); !usage(err) || !strings.Contains(err.Error(), "INBOX_DELIVERY_ALLOW_PRIVATE") || !strings.HasSuffix(err.Error(), "--allow-private)") {
		t.Errorf("create of a loopback URL without the setting: %v %s, want exit 2 naming INBOX_DELIVERY_ALLOW_PRIVATE and --allow-private", err, out)
	}
	if out, err := cli("subscriptions", "create", "--url", rc.URL, "--types", "message.created, message.creatd", "--allow-private"); !usage(err) || !strings.HasPrefix(err.Error(), `types: "message.creatd" is not a change type`) {
		t.Errorf("create with a misspelt type: %v %s, want exit 2 naming it, without the API's \"bad request\"", err, out)
	}
	// --allow-private lets the CLI store a loopback URL; the server's own setting
	// decides whether it is delivered to, and the CLI says so.
	var out string
	var created, note bytes.Buffer
	err := run(context.Background(), []string{"subscriptions", "create", "--url", rc.URL, "--types", "message.created, conversation.created", "--allow-private"},
		func(k string) string { return env[k] }, &created, &note)
	if err != nil {
		t.Fatalf("create: %v %s %s", err, &created, &note)
	}
	if !strings.Contains(note.String(), "the server delivers to it only when it runs with INBOX_DELIVERY_ALLOW_PRIVATE=true") {
		t.Errorf("create --allow-private of a loopback URL says %q on stderr, want a note that the server's setting decides", &note)
	}
	var sub delivery.Subscription
	if err := json.Unmarshal(created.Bytes(), &sub); err != nil || !strings.HasPrefix(sub.Secret, "whsec_") {
		t.Fatalf("create printed %s (%v)", &created, err)
	}
	rc.SetSecret(sub.Secret)
	id := strconv.FormatInt(sub.ID, 10)

	body := `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m1","channel":"+15550001111","contact":"+15552223333","text":"hi"}}`
	if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-1", []byte(body), time.Now())); status != 200 {
		t.Fatalf("webhook: %d %s", status, b)
	}
	pgtest.Eventually(t, "the message delivered by the service", 30*time.Second, func() (bool, error) { return len(rc.Delivered()) == 2, nil })

	if out, err = cli("subscriptions"); err != nil || !strings.Contains(out, rc.URL) || strings.Contains(out, "whsec_") {
		t.Errorf("list: %v %s", err, out)
	}
	if out, err = cli("subscriptions", "show", id); err != nil || !strings.Contains(out, sub.Secret) {
		t.Errorf("show: %v %s", err, out)
	}
	pgtest.Eventually(t, "both deliveries listed as delivered", 30*time.Second, func() (bool, error) {
		out, err = cli("subscriptions", "deliveries", id, "--state", "delivered")
		return strings.Count(out, "delivered") == 2, err
	})
	// A page cut at --limit names the next one; the last page says nothing more.
	var page, more bytes.Buffer
	if err := run(context.Background(), []string{"subscriptions", "deliveries", id, "--limit", "1"}, func(k string) string { return env[k] }, &page, &more); err != nil ||
		strings.Count(page.String(), "\n") != 2 || !strings.HasPrefix(more.String(), "more deliveries: the next page is --before ") {
		t.Errorf("deliveries --limit 1: %v %q %q, want one row and the next page's --before", err, &page, &more)
	}
	next := strings.Fields(strings.TrimPrefix(more.String(), "more deliveries: the next page is --before "))[0]
	page.Reset()
	more.Reset()
	if err := run(context.Background(), []string{"subscriptions", "deliveries", id, "--limit", "1", "--before", next}, func(k string) string { return env[k] }, &page, &more); err != nil ||
		strings.Count(page.String(), "\n") != 2 || more.Len() != 0 {
		t.Errorf("deliveries --limit 1 --before %s: %v %q %q, want the last delivery alone", next, err, &page, &more)
	}
	for _, args := range [][]string{
		{"subscriptions", "deliveries", id, "--limit", "0"},
		{"subscriptions", "replay", id},
		{"subscriptions", "frobnicate"},
		{"subscriptions", "pause"},
		{"subscriptions", "deliveries", id, "--state", "lost"},
		{"subscriptions", "show", "999999"},
	} {
		if out, err := cli(args...); !usage(err) {
			t.Errorf("%v: %v %s, want exit 2 with a reason", args, err, out)
		}
	}
	// A missing subscription points at the CLI's own list, not the API's.
	if out, err := cli("subscriptions", "delete", "999999"); err == nil || !strings.Contains(err.Error(), "subscription 999999: not found (`inboxd subscriptions` lists them)") {
		t.Errorf("delete 999999: %v %s, want the reason and where the list is", err, out)
	}
	// The verbs that change a subscription print it without its secret: create,
	// show and rotate are the ones that show it.
	if out, err = cli("subscriptions", "replay", id, "--from", ""); err != nil || !strings.Contains(out, `"state": "active"`) || strings.Contains(out, "whsec_") {
		t.Errorf("replay --from \"\": %v %s, want the subscription without its secret", err, out)
	}
	pgtest.Eventually(t, "both changes delivered again", 30*time.Second, func() (bool, error) {
		n := 0
		for _, r := range rc.Got() {
			if r.Status/100 == 2 {
				n++
			}
		}
		return n == 4, nil
	})
	// A ping reaches the endpoint and prints what it answered.
	if out, err = cli("subscriptions", "ping", id, "--allow-private"); err != nil || !strings.Contains(out, `"delivered": true`) || !strings.Contains(out, `"status": 204`) {
		t.Errorf("ping: %v %s, want the endpoint's 204", err, out)
	}
	// An update changes the types in place; a misspelt one is refused.
	if out, err = cli("subscriptions", "update", id, "--types", "message.created"); err != nil || !strings.Contains(out, `"contact.erased",`) || strings.Contains(out, "conversation.created") || strings.Contains(out, "whsec_") {
		t.Errorf("update --types message.created: %v %s", err, out)
	}
	// Where the CLI's environment allows private addresses, so does the server's, as
	// a rule: no note then.
	env["INBOX_DELIVERY_ALLOW_PRIVATE"] = "true"
	if out, err = cli("subscriptions", "update", id, "--url", rc.URL, "--allow-private"); err != nil || strings.Contains(out, "note:") {
		t.Errorf("update --url --allow-private of a loopback URL with INBOX_DELIVERY_ALLOW_PRIVATE=true: %v %s, want no note", err, out)
	}
	delete(env, "INBOX_DELIVERY_ALLOW_PRIVATE")
	if out, err = cli("subscriptions", "update", id, "--url", rc.URL, "--allow-private"); err != nil || !strings.Contains(out, "note: this address is not public") {
		t.Errorf("update --url --allow-private of a loopback URL: %v %s, want the note", err, out)
	}
	if out, err := cli("subscriptions", "update", id, "--types", "message.creatd"); !usage(err) || !strings.Contains(err.Error(), "not a change type") {
		t.Errorf("update --types message.creatd: %v %s, want exit 2 naming it", err, out)
	}
	if out, err = cli("subscriptions", "update", id, "--providers", "meta, generic:acme"); err != nil || !strings.Contains(out, `"generic:acme",`) {
		t.Errorf("update --providers: %v %s", err, out)
	}
	if out, err = cli("subscriptions", "update", id, "--providers", ""); err != nil || !strings.Contains(out, `"providers": null`) {
		t.Errorf("update --providers \"\": %v %s, want every provider", err, out)
	}
	if out, err := cli("subscriptions", "update", id); !usage(err) || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("update without --url or --types: %v %s, want exit 2 saying so", err, out)
	}
	// A rotation prints the new secret and when the old one stops signing; a time
	// kept past a week is refused.
	if out, err = cli("subscriptions", "rotate", id, "--keep-previous", "1h"); err != nil || strings.Contains(out, sub.Secret) ||
		!strings.Contains(out, `"secret": "whsec_`) || !strings.Contains(out, `"previous_secret_expires_at": "20`) {
		t.Errorf("rotate --keep-previous 1h: %v %s, want a new secret and the old one's expiry", err, out)
	}
	if out, err := cli("subscriptions", "rotate", id); !usage(err) || !strings.HasPrefix(err.Error(), "subscription "+id+": the secret its last rotation replaced still signs until") {
		t.Errorf("rotate again within the hour: %v %s, want exit 2 saying until when the old secret signs", err, out)
	}
	if out, err = cli("subscriptions", "end-previous", id); err != nil || !strings.Contains(out, `"previous_secret_expires_at": null`) || strings.Contains(out, "whsec_") {
		t.Errorf("end-previous: %v %s, want no previous secret", err, out)
	}
	if out, err := cli("subscriptions", "rotate", id, "--keep-previous", "200h"); !usage(err) || !strings.Contains(err.Error(), "up to 168h0m0s") {
		t.Errorf("rotate --keep-previous 200h: %v %s, want exit 2 naming the bound", err, out)
	}
	// A change retention deleted cannot be sent again: exit 2, saying so.
	var first string
	if err := pool.QueryRow(context.Background(), `
WITH gone AS (DELETE FROM changes WHERE (xid, seq) = (SELECT xid, seq FROM changes ORDER BY xid, seq LIMIT 1) RETURNING xid, seq)
INSERT INTO changes_horizon (xid, seq) SELECT xid, seq FROM gone RETURNING xid::text || '.' || seq`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("subscriptions", "replay", id, "--from", first); !usage(err) || !strings.Contains(err.Error(), "retention (INBOX_RETENTION) has deleted change "+first) {
		t.Errorf("replay --from %s, a change retention deleted: %v %s, want exit 2 saying so", first, err, out)
	}
	// The id may follow the flags; a breaker that closed in the past is not shown;
	// a URL and a delivery's error reach the terminal without control characters.
	if _, err := pool.Exec(context.Background(), `UPDATE subscriptions SET blocked_until = now() - interval '1 hour', url = url || e'/\x1b[2J';
UPDATE deliveries SET last_error = e'refused\x1b[31m'`); err != nil {
		t.Fatal(err)
	}
	if out, err = cli("subscriptions"); err != nil || strings.Contains(out, "\x1b") || strings.Contains(out, time.Now().UTC().Format("2006-01-02T")) {
		t.Errorf("list: %v %q, want no control characters and no blocked_until in the past", err, out)
	}
	if out, err = cli("subscriptions", "deliveries", "--state", "delivered", id); err != nil || strings.Contains(out, "\x1b") || !strings.Contains(out, "refused[31m") {
		t.Errorf("deliveries --state delivered ID: %v %q, want the id read after the flags, the error without control characters", err, out)
	}
	for verb, state := range map[string]string{"pause": "paused", "resume": "active"} {
		if out, err := cli("subscriptions", verb, id); err != nil || !strings.Contains(out, `"state": "`+state+`"`) || strings.Contains(out, "whsec_") {
			t.Errorf("%s: %v %s, want the subscription %s", verb, err, out, state)
		}
	}
	if out, err := cli("subscriptions", "delete", id); err != nil {
		t.Errorf("delete: %v %s", err, out)
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// contactData is what the leak scan looks for: a contact's number in every spelling
// a provider or a log might use, their name and their words.
type contactData struct{ number, name, text string }

func (c contactData) needles() []string {
	digits := strings.TrimPrefix(c.number, "+")
	return []string{digits, digits[1:], c.name, c.text} // "15550104567" and "5550104567" cover "+1…" and "whatsapp:+1…"
}

// TestNothingPersonalLeaks runs a mixed load through the service with every provider
// on, at the default log level (info), with tracing exported: messages, statuses,
// parked statuses, a payload that dies, bad signatures, API reads by contact, an
// export and an erasure. Then every log line, every exported span (names, attributes,
// events, links) and /metrics are scanned for any contact's number, name or text: none
// may appear. Error bodies of requests that carried personal data must not echo it.
func TestNothingPersonalLeaks(t *testing.T) {
	t.Parallel()
	receiver := newOTLPReceiver(t)
	pool, dbURL := pgtest.NewPool(t)
	base, logs, stop := startServeStoppable(t, map[string]string{
		"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_PUBLIC_URL": publicURL,
		"INBOX_TWILIO_AUTH_TOKEN": twilioToken, "INBOX_META_APP_SECRET": metaSecret,
		"INBOX_META_VERIFY_TOKEN": metaVerify, "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_API_TOKENS": "read-token", "INBOX_ADMIN_TOKENS": "admin-token",
		"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.URL, "INBOX_MAX_ATTEMPTS": "2",
	})
	var contacts []contactData
	for i := range 12 {
		contacts = append(contacts, contactData{
			number: fmt.Sprintf("+1555010%04d", 4567+i), name: fmt.Sprintf("Zelda Quuxley%d", i), text: fmt.Sprintf("my secret plan number %d", i),
		})
	}
	var errorBodies []string
	keepError := func(status int, body string) {
		if status >= 400 {
			errorBodies = append(errorBodies, body)
		}
	}
	now := time.Now().UTC()
	for i, c := range contacts {
		digits := strings.TrimPrefix(c.number, "+")
		switch i % 3 {
		case 0: // generic: in, out, a status, a status for a message never seen (parked)
			for j, body := range []string{
				fmt.Sprintf(`{"type":"message.received","timestamp":%q,"data":{"message_id":"g-in-%d","channel":"+15550001111","contact":%q,"text":%q}}`, now.Format(time.RFC3339), i, c.number, c.text),
				fmt.Sprintf(`{"type":"message.sent","timestamp":%q,"data":{"message_id":"g-out-%d","channel":"+15550001111","contact":%q,"text":%q}}`, now.Format(time.RFC3339), i, c.number, c.text+" reply"),
				fmt.Sprintf(`{"type":"message.status","timestamp":%q,"data":{"message_id":"g-out-%d","contact":%q,"status":"delivered"}}`, now.Format(time.RFC3339), i, c.number),
				fmt.Sprintf(`{"type":"message.status","timestamp":%q,"data":{"message_id":"g-unknown-%d","contact":%q,"status":"read"}}`, now.Format(time.RFC3339), i, c.number),
				fmt.Sprintf(`{"type":"message.received","timestamp":"not a time","data":{"message_id":"g-bad-%d","channel":"+15550001111","contact":%q,"text":%q}}`, i, c.number, c.text),
			} {
				status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, fmt.Sprintf("evt-%d-%d", i, j), []byte(body), time.Now()))
				keepError(status, b)
			}
			bad := providertest.Request(t, "generic", base, "", "whsec_"+strings.Repeat("A", 32), fmt.Sprintf("evt-bad-%d", i),
				[]byte(fmt.Sprintf(`{"contact":%q}`, c.number)), time.Now())
			status, _, b := do(t, bad)
			keepError(status, b)
		case 1: // twilio: SMS in with a profile name, a status callback, one without To (dies)
			for _, form := range []url.Values{
				{"MessageSid": {fmt.Sprintf("SMin%d", i)}, "From": {"whatsapp:" + c.number}, "To": {"whatsapp:+15550001111"}, "Body": {c.text}, "ProfileName": {c.name}, "FromCity": {"SPRINGFIELD"}},
				{"MessageSid": {fmt.Sprintf("SMout%d", i)}, "MessageStatus": {"delivered"}, "From": {"+15550001111"}, "To": {c.number}},
				{"MessageSid": {fmt.Sprintf("SMbad%d", i)}, "From": {c.number}, "Body": {c.text}},
			} {
				status, _, b := postTwilio(t, base, []byte(form.Encode()))
				keepError(status, b)
			}
		case 2: // meta: a message with the profile name, a status, a status that dies
			msg := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PNID"},"contacts":[{"profile":{"name":%q},"wa_id":%q}],"messages":[{"from":%q,"id":"wamid.in%d","timestamp":"%d","type":"text","text":{"body":%q}}]}}]}]}`,
				c.name, digits, digits, i, now.Unix(), c.text)
			st := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PNID"},"statuses":[{"id":"wamid.out%d","status":"read","timestamp":"%d","recipient_id":%q}]}}]}]}`,
				i, now.Unix(), digits)
			dies := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":"PNID"},"statuses":[{"id":"wamid.odd%d","timestamp":"%d","recipient_id":%q,"biz_opaque_callback_data":%q}]}}]}]}`,
				i, now.Unix(), digits, c.text) // no status: it dies in processing
			for _, body := range []string{msg, st, dies} {
				status, _, b := postMeta(t, base, []byte(body))
				keepError(status, b)
			}
		}
	}
	settle(t, pool)

	admin := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer admin-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := admin("GET", "/v1/conversations?contact="+url.QueryEscape(contacts[0].number), ""); status != 200 || !strings.Contains(body, contacts[0].number) {
		t.Errorf("conversations by contact = %d %s", status, body)
	}
	if status, body := admin("GET", "/v1/contacts/"+url.PathEscape(contacts[1].number)+"/export", ""); status != 200 || !strings.Contains(body, contacts[1].text) {
		t.Errorf("export = %d %.200s", status, body)
	}
	status, body := admin("POST", "/v1/events/replay?state=dead", "")
	keepError(status, body)
	status, body = admin("POST", "/v1/erasures", fmt.Sprintf(`{"contact":%q}`, contacts[2].number))
	if status != 202 {
		t.Fatalf("erasure = %d %s", status, body)
	}
	settle(t, pool)
	// Done in the database, and logged: the runner logs its summary just after the
	// commit, so the line may come a moment later.
	pgtest.Eventually(t, "erasure done", 30*time.Second, func() (bool, error) {
		var done bool
		err := pool.QueryRow(context.Background(), `SELECT bool_and(state = 'done') FROM erasures`).Scan(&done)
		return done && strings.Contains(logs.String(), "erasure done"), err
	})
	metricsStatus, metrics := admin("GET", "/metrics", "")
	if metricsStatus != 200 {
		t.Fatalf("/metrics = %d", metricsStatus)
	}
	if err := stop(); err != nil { // flushes the spans
		t.Fatal(err)
	}

	var spans bytes.Buffer
	receiver.mu.Lock()
	for _, s := range receiver.spans {
		fmt.Fprintf(&spans, "%s\n", s.String()) // every name, attribute, event and link, as text
	}
	receiver.mu.Unlock()
	if spans.Len() == 0 {
		t.Fatal("no span was exported: the scan would prove nothing")
	}
	if !strings.Contains(logs.String(), `"level":"error"`) || !strings.Contains(logs.String(), "erasure done") {
		t.Fatalf("the load made no error line or no erasure line: the scan would prove too little\n%s", logs)
	}
	scanned := map[string]string{"logs": logs.String(), "spans": spans.String(), "/metrics": metrics, "error bodies": strings.Join(errorBodies, "\n")}
	for _, c := range contacts {
		for _, needle := range c.needles() {
			for where, text := range scanned {
				if i := strings.Index(text, needle); i >= 0 {
					t.Errorf("%s holds %q: …%s…", where, needle, text[max(0, i-200):min(len(text), i+100)])
				}
			}
		}
	}
	if t.Failed() {
		_ = os.WriteFile(filepath.Join(t.TempDir(), "logs"), []byte(logs.String()), 0o600)
	}
}

// TestPrivacyCommands: inboxd export, erase (--dry-run first) and redact (--check,
// --apply twice) against a service whose policy hashes contacts: the commands find a
// contact by the number an operator types although only its hash is stored.
func TestPrivacyCommands(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	env := map[string]string{
		"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_REDACT": "generic:/data/contact=hash", "INBOX_REDACTION_KEY": "a redaction key of 32 bytes.....",
		"INBOX_API_TOKENS": "a-read-token-for-the-test", "INBOX_ADMIN_TOKENS": consoleAdmin,
	}
	base, _ := startServe(t, env)
	for i, c := range []string{"+15552223333", "+15552223333", "+15559998888"} {
		body := fmt.Sprintf(`{"type":"message.received","timestamp":"2026-11-25T10:00:0%dZ","data":{"message_id":"m%d","channel":"+15550001111","contact":%q,"text":"words %d"}}`, i, i, c, i)
		if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, fmt.Sprint("evt-", i), []byte(body), time.Now())); status != 200 {
			t.Fatalf("webhook: %d %s", status, b)
		}
	}
	settle(t, pool)
	cli := func(getenv map[string]string, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, func(k string) string { return getenv[k] }, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	// A search by the number finds the conversation stored under its hash, in the
	// CLI and in the API, as the export and the erasure do.
	out, errOut, err := cli(env, "conversations", "--contact", "+1 555 222 3333", "--json")
	if err != nil || strings.Count(out, `"id"`) != 1 || !strings.Contains(out, `"contact_address":"hmac-sha256:`) {
		t.Errorf("conversations --contact = %q, %q, %v; want the hashed contact's one conversation", out, errOut, err)
	}
	if _, errOut, err := cli(env, "conversations", "--contact", "555 222 3333"); err != nil || !strings.Contains(errOut, "no conversation with 555 222 3333: looked up as +5552223333 (a phone number is matched in E.164") {
		t.Errorf("conversations --contact without the country code: %q, %v; want how it was looked up", errOut, err)
	}
	req, _ := http.NewRequest("GET", base+"/v1/conversations?contact=%2B15552223333", nil)
	req.Header.Set("Authorization", "Bearer a-read-token-for-the-test")
	if status, _, body := do(t, req); status != 200 || strings.Count(string(body), `"id"`) != 1 {
		t.Errorf("GET /v1/conversations?contact= = %d %s; want the hashed contact's one conversation", status, body)
	}

	admin := consoleClient(t, base, consoleAdmin)
	_, _, csrf := page(t, admin, base+"/console/conversations")
	if status, body := post(t, admin, base+"/console/conversations", url.Values{"csrf": {csrf}, "contact": {"+1 (555) 222-3333"}}); status != 200 || strings.Count(body, `href="/console/conversations/`) != 1 {
		t.Errorf("the console's conversation search: %d, %d conversations listed; want the hashed contact's one", status, strings.Count(body, `href="/console/conversations/`))
	}

	out, errOut, err = cli(env, "export", "--contact", "+1 555 222 3333")
	if err != nil || !strings.Contains(out, `"words 0"`) || !strings.Contains(out, `"words 1"`) || strings.Contains(out, "words 2") ||
		!strings.Contains(out, `"redacted":["sender"]`) || errOut != "" {
		t.Errorf("export = %s, %q, %v; want both of the hashed contact's messages, marked redacted, and nothing on stderr", out, errOut, err)
	}
	// An export that finds nothing says so, with the address as looked up: an empty
	// document sent on as "nothing is held" must not hide a number typed without its
	// country code.
	out, errOut, err = cli(env, "export", "--contact", "555 222 3333")
	if err != nil || !strings.Contains(out, `"conversations":[]`) || !strings.Contains(errOut, "nothing is held about +5552223333 (a phone number is matched in E.164") {
		t.Errorf("export of a number without its country code = %s, %q, %v; want the empty document and why nothing matched", out, errOut, err)
	}
	out, _, err = cli(env, "erase", "--contact", "15552223333", "--dry-run")
	if err != nil || !strings.Contains(out, `"messages": 2`) || !strings.Contains(out, `"conversations": 1`) {
		t.Errorf("erase --dry-run = %s, %v", out, err)
	}
	out, _, err = cli(env, "erase", "--contact", "+15552223333")
	if err != nil || !strings.Contains(out, `"state": "done"`) || !strings.Contains(out, `"messages": 2`) || strings.Contains(out, "5552223333") {
		t.Errorf("erase = %s, %v", out, err)
	}
	wantRows(t, "messages left", rows(t, pool, `SELECT text FROM messages ORDER BY id`), []string{"words 2"})
	out, errOut, err = cli(env, "erase", "--contact", "555 999 8888", "--dry-run")
	if err != nil || !strings.Contains(out, `"contact": "+5559998888"`) || !strings.Contains(errOut, "nothing is held about +5559998888 (a phone number is matched in E.164, with its country code") {
		t.Errorf("erase --dry-run of a number without its country code = %q, %q, %v; want the address it looked up and why nothing matched", out, errOut, err)
	}
	if _, errOut, _ := cli(env, "erase", "--contact", "+15552223333", "--provider", "meta", "--dry-run"); !strings.Contains(errOut, "in meta's conversations") {
		t.Errorf("erase --dry-run --provider meta of a contact held elsewhere says %q, want it to say where it looked", errOut)
	}
	if _, errOut, _ := cli(env, "erase", "--contact", "+15559998888", "--dry-run"); errOut != "" {
		t.Errorf("erase --dry-run of a contact with data says %q", errOut)
	}
	if _, _, err := cli(env, "erase"); !isUsage(err) {
		t.Errorf("erase without --contact = %v, want a usage error", err)
	}

	payload := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(payload, []byte(`{"MessageSid":"SM1","From":"+15551234567","FromZip":"94105","Body":"hi"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := cli(env, "redact", "--check", "--provider", "meta", "--file", payload); err != nil || errOut != "no rule changes this payload\n" {
		t.Errorf("redact --check of a payload no rule touches: %q, %v; want it said", errOut, err)
	}
	out, errOut, err = cli(env, "redact", "--check", "--provider", "twilio", "--file", payload)
	if err != nil || strings.Contains(out, "94105") || !strings.Contains(out, `"Body":"hi"`) || !strings.Contains(errOut, "/FromZip") {
		t.Errorf("redact --check = %q, %q, %v; want FromZip removed by the defaults", out, errOut, err)
	}
	if _, _, err := cli(env, "redact", "--check", "--file", payload); !isUsage(err) || !strings.Contains(err.Error(), "a provider is required: one of generic, twilio") {
		t.Errorf("redact --check without --provider = %v, want a usage error naming the providers", err)
	}
	// An event as `inboxd events show` prints it: its payload is checked, under its provider.
	shown := filepath.Join(t.TempDir(), "event.json")
	if err := os.WriteFile(shown, []byte(`{"id": 7, "provider": "twilio", "external_id": "SM1", "received_at": "2026-12-01T00:00:00Z",
  "payload": {"MessageSid": "SM1", "FromZip": "94105", "Body": "hi"}, "meaning": "inbound text message"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = cli(env, "redact", "--check", "--file", shown)
	if err != nil || out != `{"Body":"hi","MessageSid":"SM1"}`+"\n" || errOut != "changed: /FromZip\n" {
		t.Errorf("redact --check of an events show document = %q, %q, %v; want its payload without FromZip", out, errOut, err)
	}
	if _, _, err := cli(env, "redact", "--check", "--provider", "meta", "--file", shown); !isUsage(err) || !strings.Contains(err.Error(), "event 7 of twilio") {
		t.Errorf("redact --check --provider meta of a twilio event = %v, want a usage error naming the event's provider", err)
	}
	// A payload that has an id, a provider and a payload of its own, but not an
	// event's external_id and received_at, is checked as the payload it is.
	lookalike := filepath.Join(t.TempDir(), "lookalike.json")
	if err := os.WriteFile(lookalike, []byte(`{"id": 7, "provider": "meta", "payload": {"x": 1}, "FromZip": "94105"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := cli(env, "redact", "--check", "--provider", "twilio", "--file", lookalike); err != nil || strings.Contains(out, "94105") || errOut != "changed: /FromZip\n" {
		t.Errorf("redact --check of a payload with provider and payload fields = %q, %q, %v; want it checked whole, as twilio's", out, errOut, err)
	}
	masked := map[string]string{"DATABASE_URL": dbURL, "INBOX_REDACT": env["INBOX_REDACT"] + ",generic:/data/text=mask", "INBOX_REDACTION_KEY": env["INBOX_REDACTION_KEY"]}
	before := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	for i, want := range []string{"rewrote 1 payloads", "rewrote 0 payloads"} { // the erased two are tombstones; then idempotent
		if out, _, err := cli(masked, "redact", "--apply", "--before", before); err != nil || !strings.Contains(out, want) {
			t.Errorf("redact --apply, run %d = %q, %v; want %q", i+1, out, err, want)
		}
	}
	wantRows(t, "payload texts", rows(t, pool, `SELECT payload->'data'->>'text' FROM inbound_events WHERE erased_at IS NULL`), []string{"[redacted]"})
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

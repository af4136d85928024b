package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/provider/registry"
	"inboxd/internal/provider/twilio"
)

const (
	twilioToken = "twilio-test-token"
	metaSecret  = "meta-app-secret"
	metaVerify  = "meta-verify-token"
	publicURL   = "https://inbox.example.com" // what the providers call, behind a proxy
)

// providerEnv starts inboxd with every provider enabled.
func providerEnv(t *testing.T) (base string, pool *pgxpool.Pool) {
	t.Helper()
	pool, url := pgtest.NewPool(t)
	return startProviders(t, map[string]string{"DATABASE_URL": url}), pool
}

// startProviders starts inboxd with every provider enabled, and env on top (at least
// the database).
func startProviders(t *testing.T, env map[string]string) string {
	t.Helper()
	all := map[string]string{
		"INBOX_ADDR": "127.0.0.1:0", "INBOX_PUBLIC_URL": publicURL,
		"INBOX_TWILIO_AUTH_TOKEN": "old-token," + twilioToken, "INBOX_META_APP_SECRET": metaSecret,
		"INBOX_META_VERIFY_TOKEN": metaVerify, "INBOX_GENERIC_SECRETS": testSecret,
		"INBOX_TELNYX_PUBLIC_KEY": providertest.TelnyxPublicKey,
		"INBOX_API_TOKENS":        "read-token", "INBOX_ADMIN_TOKENS": "admin-token",
	}
	for k, v := range env {
		all[k] = v
	}
	base, _ := startServe(t, all)
	return base
}

// fixture reads a provider's test fixture: "twilio/inbound_sms.form" is
// internal/provider/twilio/testdata/inbound_sms.form.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	prov, file, _ := strings.Cut(name, "/")
	b, err := os.ReadFile("../../internal/provider/" + prov + "/testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// postTwilio posts a form as Twilio does, signed over INBOX_PUBLIC_URL + path.
func postTwilio(t *testing.T, base string, body []byte) (int, string, string) {
	t.Helper()
	return do(t, providertest.Request(t, "twilio", base, publicURL, twilioToken, "", body, time.Now()))
}

// postMeta posts JSON as Meta does, with X-Hub-Signature-256.
func postMeta(t *testing.T, base string, body []byte) (int, string, string) {
	t.Helper()
	return do(t, providertest.Request(t, "meta", base, "", metaSecret, "", body, time.Now()))
}

func do(t *testing.T, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

// settle waits until every stored event is processed or dead.
func settle(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	pgtest.Eventually(t, "every event processed or dead", 15*time.Second, func() (bool, error) {
		var open int
		err := pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE state IN ('pending', 'processing')").Scan(&open)
		return err == nil && open == 0, err
	})
}

// rows returns a query's rows as one string per row, columns joined by "|".
func rows(t *testing.T, pool *pgxpool.Pool, sql string) []string {
	t.Helper()
	r, err := pool.Query(context.Background(), sql)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		vals, err := r.Values()
		if err != nil {
			t.Fatal(err)
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			switch v := v.(type) {
			case time.Time:
				parts[i] = v.UTC().Format(time.RFC3339)
			case nil:
				parts[i] = "∅"
			default:
				b, _ := json.Marshal(v)
				parts[i] = strings.Trim(string(b), `"`)
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	return out
}

// apiMessages reads every conversation's messages through the read API and returns
// "contact: text" per message, conversations latest first.
func apiMessages(t *testing.T, base string) []string {
	t.Helper()
	get := func(path string, into any) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer read-token")
		status, _, body := do(t, req)
		if status != 200 || json.Unmarshal([]byte(body), into) != nil {
			t.Fatalf("GET %s = %d %s", path, status, body)
		}
	}
	var convs struct {
		Data []struct {
			ID             int64  `json:"id"`
			ContactAddress string `json:"contact_address"`
		}
	}
	get("/v1/conversations?limit=200", &convs)
	var out []string
	for _, c := range convs.Data {
		var msgs struct {
			Data []struct {
				Type string  `json:"type"`
				Text *string `json:"text"`
			}
		}
		get(fmt.Sprintf("/v1/conversations/%d/messages?limit=200", c.ID), &msgs)
		for _, m := range msgs.Data {
			text := m.Type
			if m.Text != nil {
				text = *m.Text
			}
			out = append(out, c.ContactAddress+": "+text)
		}
	}
	return out
}

func wantRows(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot\n  %s\nwant\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestTwilioEndToEnd(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	for _, f := range []string{"twilio/inbound_sms.form", "twilio/inbound_whatsapp_media.form", "twilio/status_delivered.form", "twilio/status_undelivered.form"} {
		status, ctype, body := postTwilio(t, base, fixture(t, f))
		if status != 200 || ctype != "text/xml" || body != "<Response></Response>" {
			t.Fatalf("%s: %d %s %q, want 200 text/xml <Response></Response>", f, status, ctype, body)
		}
	}
	// Redelivery of the same callback: acknowledged, nothing new.
	if status, _, _ := postTwilio(t, base, fixture(t, "twilio/status_delivered.form")); status != 200 {
		t.Errorf("redelivered status: %d", status)
	}
	settle(t, pool)
	// By address, not id: each webhook's event is handed to a worker of its own, and
	// their applies may commit in either order.
	wantRows(t, "conversations", rows(t, pool, `SELECT provider, channel_address, contact_address, contact_name FROM conversations ORDER BY channel_address`), []string{
		"twilio|+15557778888|+15551234567|∅",
		"twilio|whatsapp:+14155238886|+15551234567|Alice",
	})
	wantRows(t, "messages", rows(t, pool, `SELECT provider_message_id, direction, type, sender, recipient, text, media, status FROM messages ORDER BY inbound_event_id`), []string{
		"SM1f0e8ae6ade43cb3c0ce4525424e404f|inbound|text|+15551234567|+15557778888|Hello from Twilio!|[]|received",
		`MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a|inbound|image|+15551234567|whatsapp:+14155238886|∅|[{"content_type":"image/jpeg","url":"https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages/MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a/Media/ME00000000000000000000000000000000"}]|received`,
	})
	// Statuses for a message inboxd never saw (sent by another system) are kept.
	wantRows(t, "parked statuses", rows(t, pool, `SELECT provider_message_id, status, error FROM pending_statuses ORDER BY inbound_event_id`), []string{
		"SM9b2f3c4d5e6f708192a3b4c5d6e7f809|delivered|∅",
		`SM9b2f3c4d5e6f708192a3b4c5d6e7f809|undelivered|{"code":"30003","message":"Unreachable destination handset"}`,
	})
	wantRows(t, "through the API", apiMessages(t, base), []string{
		"+15551234567: image", // the WhatsApp conversation is the later one
		"+15551234567: Hello from Twilio!",
	})
	wantRows(t, "events", rows(t, pool, `SELECT external_id, state FROM inbound_events ORDER BY id`), []string{
		"SM1f0e8ae6ade43cb3c0ce4525424e404f|processed",
		"MM4c8a07ae1d5a4f0a1e6f3e5c8e2d7b9a|processed",
		"SM9b2f3c4d5e6f708192a3b4c5d6e7f809:delivered|processed",
		"SM9b2f3c4d5e6f708192a3b4c5d6e7f809:undelivered|processed",
	})
}

// signers are the test credentials each provider signs with here, and a wrong one.
var signers = map[string]struct{ secret, wrong string }{
	"generic": {testSecret, "whsec_c2VjcmV0LW51bWJlci10d28="},
	"twilio":  {twilioToken, "not-the-token"},
	"meta":    {metaSecret, "not-the-secret"},
	"telnyx":  {providertest.TelnyxPrivateKey, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))},
}

// signsTime: the providers whose signature covers a timestamp (refused when stale).
var signsTime = map[string]bool{"generic": true, "telnyx": true}

// bodyLimits are the largest bodies each provider accepts, as docs/webhooks.md gives
// them: its own limit, or INBOX_MAX_BODY_BYTES (4 MiB) when that is smaller.
var bodyLimits = map[string]int{"generic": 1 << 20, "twilio": 64 << 10, "meta": 4 << 20, "telnyx": 256 << 10}

// keptHeaders are the provider's own headers each event keeps (docs/webhooks.md),
// besides Content-Type, of those its signer sends.
var keptHeaders = map[string][]string{"generic": {"Webhook-Id", "Webhook-Timestamp"}, "telnyx": {"Telnyx-Timestamp"}}

// TestProviderContract runs every provider of the registry through the same contract
// on the real binary: its example (what `inboxd sign` posts) is accepted and becomes
// a message; a redelivery is a duplicate; a wrong key and a stale timestamp are 401
// and store nothing; content Postgres cannot store (U+0000) is stored replaced, never
// refused; a body over the provider's limit is 413 before its signature is read; the
// provider's own headers are kept with its events. A provider added to the registry
// is covered by adding its signer and limit above.
func TestProviderContract(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	for _, p := range registry.All {
		signer, ok := signers[p.Name]
		if !ok {
			t.Errorf("provider %s has no signer in this test", p.Name)
			continue
		}
		send := func(secret, id string, body []byte, at time.Time) (int, string) {
			t.Helper()
			status, _, b := do(t, providertest.Request(t, p.Name, base, publicURL, secret, id, body, at))
			return status, b
		}
		id := "contract-" + p.Name
		example := p.Example(id, time.Now())
		for try := range 2 {
			if status, b := send(signer.secret, id, example, time.Now()); status != 200 || (try == 1 && strings.HasPrefix(b, "{") && !strings.Contains(b, `"duplicate":true`)) {
				t.Errorf("%s example, try %d: %d %s, want 200 (a duplicate the second time)", p.Name, try+1, status, b)
			}
		}
		if status, b := send(signer.wrong, id+"-wrong", p.Example(id+"-wrong", time.Now()), time.Now()); status != 401 {
			t.Errorf("%s with a wrong key: %d %s, want 401", p.Name, status, b)
		}
		if signsTime[p.Name] {
			if status, b := send(signer.secret, id+"-stale", p.Example(id+"-stale", time.Now()), time.Now().Add(-10*time.Minute)); status != 401 || !strings.Contains(b, "timestamp") {
				t.Errorf("%s with a stale timestamp: %d %s, want 401 naming the timestamp", p.Name, status, b)
			}
		}
		over := providertest.Request(t, p.Name, base, publicURL, signer.secret, id+"-big", bytes.Repeat([]byte(" "), bodyLimits[p.Name]+1), time.Now())
		if status, _, b := do(t, over); status != 413 || !strings.Contains(b, strconv.Itoa(bodyLimits[p.Name])) {
			t.Errorf("%s with a body one byte over its limit: %d %s, want 413 naming %d bytes", p.Name, status, b, bodyLimits[p.Name])
		}
		old, bad := poisonText(example)
		poison := bytes.Replace(p.Example(id+"-nul", time.Now()), []byte(old), []byte(bad), 1)
		if status, b := send(signer.secret, id+"-nul", poison, time.Now()); status != 200 {
			t.Errorf("%s with U+0000 in its text: %d %s, want 200", p.Name, status, b)
		}
	}
	settle(t, pool)
	wantRows(t, "messages", rows(t, pool, `SELECT provider, provider_message_id, text FROM messages ORDER BY provider, provider_message_id`), []string{
		"generic|contract-generic|hello from inboxd sign",
		"generic|contract-generic-nul|bad \uFFFD text",
		"meta|contract-meta|hello from inboxd sign",
		"meta|contract-meta-nul|bad \uFFFD text",
		"telnyx|contract-telnyx|hello from inboxd sign",
		"telnyx|contract-telnyx-nul|bad \uFFFD text",
		"twilio|contract-twilio|hello from inboxd sign",
		"twilio|contract-twilio-nul|bad \uFFFD text",
	})
	wantRows(t, "events", rows(t, pool, `SELECT provider, count(*), count(*) FILTER (WHERE state = 'processed') FROM inbound_events GROUP BY provider ORDER BY provider`), []string{
		"generic|2|2", "meta|2|2", "telnyx|2|2", "twilio|2|2",
	})
	for _, p := range registry.All {
		var headers map[string]string
		if err := pool.QueryRow(context.Background(), `SELECT headers FROM inbound_events WHERE external_id LIKE '%contract-%' AND provider = $1 LIMIT 1`, p.Name).Scan(&headers); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		for _, h := range append([]string{"Content-Type"}, keptHeaders[p.Name]...) {
			if headers[h] == "" {
				t.Errorf("%s: the event kept headers %v, want %s among them", p.Name, headers, h)
			}
		}
	}
}

// poisonText returns the example's text and a text with U+0000 to put in its place,
// as a JSON string escape or a form value.
func poisonText(example []byte) (old, bad string) {
	if bytes.HasPrefix(example, []byte("{")) {
		return "hello from inboxd sign", `bad \u0000 text`
	}
	return "hello+from+inboxd+sign", "bad+%00+text"
}

// TestTelnyxStatuses: an outbound message's outcome (message.finalized) applies once
// the message is there, whichever arrives first, and never goes back.
func TestTelnyxStatuses(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	post := func(file string, edit func(string) string) {
		t.Helper()
		body := []byte(edit(string(fixture(t, "telnyx/"+file))))
		if status, _, b := do(t, providertest.Request(t, "telnyx", base, "", providertest.TelnyxPrivateKey, "", body, time.Now())); status != 200 {
			t.Fatalf("%s: %d %s", file, status, b)
		}
	}
	same := func(s string) string { return s }
	post("message_finalized.json", same) // before its message: parked
	settle(t, pool)
	post("message_sent.json", same)
	settle(t, pool)
	post("message_finalized.json", func(s string) string { // a late, lower outcome
		s = strings.Replace(s, "6dd7e2a7-5d2f-4a3c-9c6c-1a2b3c4d5e6f", "6dd7e2a7-late", 1)
		return strings.Replace(s, `"status": "delivered"`, `"status": "delivery_unconfirmed"`, 1)
	})
	settle(t, pool)
	wantRows(t, "messages", rows(t, pool, `SELECT provider_message_id, direction, type, status FROM messages`), []string{
		"40385f64-5717-4562-b3fc-2c963f66afa6|outbound|image|delivered",
	})
	wantRows(t, "conversations", rows(t, pool, `SELECT provider, channel_address, contact_address FROM conversations`), []string{
		"telnyx|+15550001111|+15552223333",
	})
}

func TestTwilioRejects(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	body := fixture(t, "twilio/inbound_sms.form")
	req, _ := http.NewRequest("POST", base+"/webhooks/twilio", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twilio.Sign("wrong", publicURL+"/webhooks/twilio", url.Values{}))
	if status, ctype, b := do(t, req); status != 401 || ctype != "application/json" || !strings.Contains(b, "invalid_signature") {
		t.Errorf("bad signature: %d %s %s, want 401 JSON invalid_signature", status, ctype, b)
	}
	var n int
	pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events").Scan(&n)
	if n != 0 {
		t.Errorf("%d events stored from a rejected request", n)
	}
}

func TestMetaEndToEnd(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	for _, tc := range []struct {
		file   string
		events int
	}{{"meta/text.json", 1}, {"meta/media.json", 5}, {"meta/batch.json", 5}, {"meta/no_messages.json", 0}} {
		status, _, body := postMeta(t, base, fixture(t, tc.file))
		var ack struct{ Events []ingest.Result }
		if err := json.Unmarshal([]byte(body), &ack); status != 200 || err != nil || len(ack.Events) != tc.events {
			t.Fatalf("%s: %d %s, want 200 with %d events", tc.file, status, body, tc.events)
		}
	}
	settle(t, pool)
	wantRows(t, "conversations", rows(t, pool, `SELECT provider, channel_address, contact_address, contact_name, last_message_at FROM conversations ORDER BY contact_address`), []string{
		"meta|106540352242922|+16505551234|Sheena Nelson|2025-06-08T21:01:40Z",
		"meta|106540352242922|US.13491208655302741918|Pablo Morales|2025-06-08T21:01:41Z",
	})
	wantRows(t, "messages", rows(t, pool, `SELECT provider_message_id, type, sender, text, media, content, sent_at FROM messages ORDER BY sent_at, id`), []string{
		"wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=|text|+16505551234|Does it come in another color?|[]|∅|2025-06-08T20:59:43Z",
		`wamid.image-1|image|+16505551234|This one?|[{"caption":"This one?","content_type":"image/jpeg","id":"1003383421387256"}]|∅|2025-06-08T21:00:00Z`,
		`wamid.document-1|document|+16505551234|∅|[{"content_type":"application/pdf","id":"1090117512932474"}]|{"filename":"receipt.pdf"}|2025-06-08T21:00:01Z`,
		`wamid.location-1|location|+16505551234|∅|[]|{"address":"1 Hacker Way, Menlo Park, CA 94025","latitude":37.483307,"longitude":-122.148981,"name":"Main Campus"}|2025-06-08T21:00:02Z`,
		`wamid.reaction-1|reaction|+16505551234|👍|[]|{"emoji":"👍","message_id":"wamid.image-1"}|2025-06-08T21:00:03Z`,
		`wamid.order-1|unsupported|+16505551234|∅|[]|{"from":"16505551234","id":"wamid.order-1","order":{"catalog_id":"194836987003835","product_items":[{"currency":"USD","item_price":30,"product_retailer_id":"di9ozbzfi4","quantity":2}]},"timestamp":"1749416404","type":"order"}|2025-06-08T21:00:04Z`,
		"wamid.batch-1|text|+16505551234|first|[]|∅|2025-06-08T21:01:40Z",
		`wamid.batch-2|interactive|US.13491208655302741918|Yes, please|[]|{"button_reply":{"id":"yes-button","title":"Yes, please"},"type":"button_reply"}|2025-06-08T21:01:41Z`,
	})
	wantRows(t, "parked statuses", rows(t, pool, `SELECT provider_message_id, status, status_at FROM pending_statuses ORDER BY inbound_event_id`), []string{
		"wamid.out-1|delivered|2025-06-08T21:01:50Z",
		"wamid.out-1|read|2025-06-08T21:02:00Z",
		"wamid.out-2|failed|2025-06-08T21:02:10Z",
	})
	wantRows(t, "through the API", apiMessages(t, base), []string{
		"US.13491208655302741918: Yes, please",
		"+16505551234: Does it come in another color?", "+16505551234: This one?", "+16505551234: document",
		"+16505551234: location", "+16505551234: 👍", "+16505551234: unsupported", "+16505551234: first",
	})
	// Meta redelivers without failures on our side: nothing new is stored.
	status, _, body := postMeta(t, base, fixture(t, "meta/batch.json"))
	if status != 200 || strings.Count(body, `"duplicate":true`) != 5 {
		t.Errorf("redelivered batch: %d %s, want five duplicates", status, body)
	}
}

// TestMetaAlbum: an album arrives as several concurrent POSTs for one new contact:
// one conversation, never two.
func TestMetaAlbum(t *testing.T) {
	t.Parallel()
	base, pool := providerEnv(t)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
"metadata":{"phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Ana"},"wa_id":"5511999990000"}],
"messages":[{"from":"5511999990000","id":"wamid.album-%d","timestamp":"1749416600","type":"image","image":{"id":"img-%d","mime_type":"image/jpeg"}}]}}]}]}`, i, i)
			if status, _, b := postMeta(t, base, []byte(body)); status != 200 {
				t.Errorf("album part %d: %d %s", i, status, b)
			}
		})
	}
	wg.Wait()
	settle(t, pool)
	wantRows(t, "conversations", rows(t, pool, `SELECT contact_address, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) FROM conversations c`), []string{"+5511999990000|10"})
}

func TestMetaVerifyHandshake(t *testing.T) {
	t.Parallel()
	base, _ := providerEnv(t)
	for _, tc := range []struct {
		query      string
		wantStatus int
		wantBody   string
	}{
		{"hub.mode=subscribe&hub.verify_token=" + metaVerify + "&hub.challenge=1158201444", 200, "1158201444"},
		{"hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1158201444", 403, ""},
		{"hub.mode=unsubscribe&hub.verify_token=" + metaVerify + "&hub.challenge=1", 403, ""},
	} {
		resp, err := http.Get(base + "/webhooks/meta?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || (tc.wantBody != "" && string(b) != tc.wantBody) {
			t.Errorf("GET ?%s = %d %q, want %d %q", tc.query, resp.StatusCode, b, tc.wantStatus, tc.wantBody)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET ?%s: no X-Content-Type-Options: nosniff (the challenge is echoed as sent)", tc.query)
		}
	}
}

// TestOfficialLibrarySchemes: requests signed the way the providers' own libraries
// sign are acknowledged and processed by the binary, in every scheme, and the same
// with a wrong key is a 401 whose reason names the scheme. Twilio's are replayed as
// twilio-node made them (testdata/vectors.json: no timestamp, so they stay valid);
// Standard Webhooks' carry a time, so they are signed now by the generic signer,
// which TestLibraryVectors shows makes the libraries' very signatures.
func TestOfficialLibrarySchemes(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	whsk := "whsk_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{5}, 32))
	whpk := "whpk_" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32)).Public().(ed25519.PublicKey))
	base := startProviders(t, map[string]string{
		"DATABASE_URL": url, "INBOX_GENERIC_SECRETS": testSecret + "," + whpk,
		"INBOX_TWILIO_AUTH_TOKEN":  "twilio-vector-auth-token",
		"INBOX_TWILIO_SHARED_KEYS": "the-next-shared-key,twilio-vector-shared-key-secret",
	})

	var vectors []struct {
		Name, URL, Body string
		Valid           bool
		Headers         map[string]string
	}
	if err := json.Unmarshal(fixture(t, "twilio/vectors.json"), &vectors); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		req, _ := http.NewRequest("POST", base+strings.TrimPrefix(v.URL, publicURL), strings.NewReader(v.Body))
		for k, val := range v.Headers {
			req.Header.Set(k, val)
		}
		status, _, body := do(t, req)
		if want := map[bool]int{true: 200, false: 401}[v.Valid]; status != want {
			t.Errorf("twilio %s: %d %s, want %d", v.Name, status, body, want)
		}
		if !v.Valid && !strings.Contains(body, map[bool]string{true: "SharedKey", false: "INBOX_TWILIO_AUTH_TOKEN"}[v.Headers["X-Twilio-Webhooks-Signature-Settings"] != ""]) {
			t.Errorf("twilio %s refused with %s: the reason does not name the scheme", v.Name, body)
		}
	}

	svix := func(h http.Header) {
		for _, n := range []string{"id", "timestamp", "signature"} {
			h.Set("svix-"+n, h.Get("webhook-"+n))
			h.Del("webhook-" + n)
		}
	}
	for _, tc := range []struct {
		name, secret string
		rename       func(http.Header)
		want         int
		reason       string
	}{
		{"v1", testSecret, nil, 200, ""},
		{"v1 as svix-*", testSecret, svix, 200, ""},
		{"v1a", whsk, nil, 200, ""},
		{"v1, wrong key", "whsec_c2VjcmV0LW51bWJlci10d28=", nil, 401, "v1"},
		{"v1a, wrong key", "whsk_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{6}, 32)), nil, 401, "v1a"},
	} {
		id := "lib-" + strings.NewReplacer(" ", "-", ",", "", "*", "").Replace(tc.name)
		body := fmt.Appendf(nil, `{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"héllo 👋"}}`, id)
		req := providertest.Request(t, "generic", base, "", tc.secret, id, body, time.Now())
		if tc.rename != nil {
			tc.rename(req.Header)
		}
		if status, _, b := do(t, req); status != tc.want || !strings.Contains(b, tc.reason) {
			t.Errorf("generic %s: %d %s, want %d naming %q", tc.name, status, b, tc.want, tc.reason)
		}
	}
	settle(t, pool)
	wantRows(t, "messages", rows(t, pool, `SELECT provider, provider_message_id FROM messages ORDER BY 1, 2`), []string{
		"generic|lib-v1", "generic|lib-v1-as-svix-", "generic|lib-v1a",
		"twilio|SMvector00000000000000000000000001", "twilio|SMvector00000000000000000000000002",
	})
}

// TestGenericSenders: with per-sender keys, two senders that use the same webhook id
// are two events (neither suppresses the other), stored and processed under
// generic:<name>, in conversations of their own.
func TestGenericSenders(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	const acme, beta = "whsec_c2VjcmV0LW51bWJlci1vbmU=", "whsec_c2VjcmV0LW51bWJlci10d28="
	base, _ := startServe(t, map[string]string{
		"DATABASE_URL": url, "INBOX_ADDR": "127.0.0.1:0",
		"INBOX_GENERIC_SENDERS": "acme:" + acme + ",beta:" + beta,
	})
	body := []byte(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m-same","channel":"+15550001111","contact":"+15552223333","text":"same ids"}}`)
	for _, secret := range []string{acme, beta} {
		if status, _, b := do(t, providertest.Request(t, "generic", base, "", secret, "evt-same", body, time.Now())); status != 200 || strings.Contains(b, `"duplicate":true`) {
			t.Errorf("sender with %s…: %d %s, want a new event", secret[:10], status, b)
		}
	}
	settle(t, pool)
	wantRows(t, "events", rows(t, pool, `SELECT provider, external_id, state FROM inbound_events ORDER BY provider`), []string{
		"generic:acme|evt-same|processed", "generic:beta|evt-same|processed",
	})
	wantRows(t, "conversations", rows(t, pool, `SELECT provider FROM conversations ORDER BY provider`), []string{"generic:acme", "generic:beta"})
}

// TestRedaction: what the policy removes is in no stored row (Twilio's location
// fields, by default); a hashed contact still makes one conversation of two
// messages; masked text is what the message says; a rule against an id refuses to
// start.
func TestRedaction(t *testing.T) {
	t.Parallel()
	pool, dbURL := pgtest.NewPool(t)
	base, _ := startServe(t, map[string]string{
		"DATABASE_URL": dbURL, "INBOX_ADDR": "127.0.0.1:0", "INBOX_PUBLIC_URL": publicURL,
		"INBOX_GENERIC_SECRETS": testSecret, "INBOX_TWILIO_AUTH_TOKEN": twilioToken,
		"INBOX_REDACT":        "generic:/data/contact=hash, generic:/data/text=mask",
		"INBOX_REDACTION_KEY": "a redaction key of 32 bytes.....",
	})
	form := url.Values{"MessageSid": {"SMzip"}, "From": {"+15552223333"}, "To": {"+15550001111"}, "Body": {"hi"},
		"FromCity": {"SAN FRANCISCO"}, "FromZip": {"94105"}, "ToState": {"CA"}}
	if status, _, b := postTwilio(t, base, []byte(form.Encode())); status != 200 {
		t.Fatalf("twilio: %d %s", status, b)
	}
	for i, id := range []string{"m-h1", "m-h2"} {
		body := fmt.Appendf(nil, `{"type":"message.received","timestamp":"2026-11-25T10:00:0%dZ","data":{"message_id":%q,"channel":"+15550001111","contact":"+15557654321","text":"secret words"}}`, i, id)
		if status, _, b := do(t, providertest.Request(t, "generic", base, "", testSecret, "evt-"+id, body, time.Now())); status != 200 {
			t.Fatalf("generic: %d %s", status, b)
		}
	}
	settle(t, pool)
	for _, leaked := range []string{"94105", "SAN FRANCISCO", "+15557654321", "secret words"} {
		if got := rows(t, pool, fmt.Sprintf(`SELECT id FROM inbound_events WHERE payload::text LIKE '%%%s%%'
UNION ALL SELECT id FROM messages WHERE concat(text, sender, recipient) LIKE '%%%s%%'
UNION ALL SELECT id FROM conversations WHERE contact_address LIKE '%%%s%%'`, leaked, leaked, leaked)); len(got) > 0 {
			t.Errorf("%q is stored: rows %v", leaked, got)
		}
	}
	wantRows(t, "generic conversations", rows(t, pool, `SELECT count(*), min(contact_address) LIKE 'hmac-sha256:%' FROM conversations WHERE provider = 'generic'`), []string{"1|true"})
	wantRows(t, "generic messages", rows(t, pool, `SELECT text FROM messages WHERE provider = 'generic' ORDER BY id`), []string{"[redacted]", "[redacted]"})

	var out syncBuffer
	err := run(context.Background(), []string{"serve"}, func(k string) string {
		return map[string]string{"DATABASE_URL": dbURL, "INBOX_GENERIC_SECRETS": testSecret, "INBOX_DEV": "true", "INBOX_REDACT": "generic:/data/message_id=remove"}[k]
	}, &out, &out)
	var usage usageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "generic:/data/message_id=remove") {
		t.Errorf("a rule against the message id: %v, want a usage error naming the rule", err)
	}
}

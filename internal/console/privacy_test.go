package console

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"inboxd/internal/pgtest"
	"inboxd/internal/privacy"
)

// TestConsoleErasure: an admin erases or exports a contact from the console. The
// erasures page has the form, and a conversation a button that sends its contact;
// the contact travels in forms' bodies only. A contact the privacy package refuses
// is a 400 saying why. The preview counts what is held and erases nothing; the
// export is the contact's document, as an attachment (an export refused before its
// first byte is an error page, not a file); the erasure is started and leads to the
// receipts, which reload themselves while it runs; once run, it has left the other
// contact's conversation alone. Read-only
// sessions are refused each, and a console without an eraser offers none.
func TestConsoleErasure(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	ctx := context.Background()
	eraser := privacy.NewEraser(pool, zap.NewNop(), nil, "console-test")
	serve, csrf := adminConsole(Config{Pool: pool, Eraser: eraser})
	post := func(path string, form url.Values) (int, http.Header, string) {
		form.Set("csrf", csrf)
		w := serve("POST", path, form.Encode())
		return w.Code, w.Header(), w.Body.String()
	}
	var erased, kept int64
	if err := pool.QueryRow(ctx, `
WITH c AS (INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
           VALUES ('generic', '+15550001111', '+15552223333', now()), ('generic', '+15550001111', '+15554445555', now()) RETURNING id, contact_address),
     e AS (INSERT INTO inbound_events (provider, external_id, payload, state, contact, processed_at)
           SELECT 'generic', 'e-' || i || '-' || c.contact_address, '{"text": "x"}', 'processed', c.contact_address, now()
           FROM c, generate_series(1, 2) i RETURNING id, contact),
     m AS (INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
           SELECT 'generic', 'm-' || e.id, c.id, 'inbound', c.contact_address, '+15550001111', 'said by ' || c.contact_address, 'received', now(), e.id
           FROM e JOIN c ON c.contact_address = e.contact RETURNING 0)
SELECT (SELECT id FROM c WHERE contact_address = '+15552223333'), (SELECT id FROM c WHERE contact_address = '+15554445555'), (SELECT count(*) FROM m)`).Scan(&erased, &kept, new(int)); err != nil {
		t.Fatal(err)
	}
	conversations := func() (n int) {
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM conversations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	if body := serve("GET", "/console/erasures", "").Body.String(); !strings.Contains(body, `id="erase-form"`) {
		t.Errorf("the erasures page has no form:\n%s", body)
	}
	thread := serve("GET", "/console/conversations/"+strconv.FormatInt(erased, 10), "").Body.String()
	if !strings.Contains(thread, `<input type="hidden" name="contact" value="&#43;15552223333">`) || !strings.Contains(thread, `id="erase-contact"`) {
		t.Errorf("the conversation offers no erasure of its contact:\n%s", thread)
	}
	if status, _, body := post("/console/erasures/preview", url.Values{"contact": {" "}}); status != http.StatusBadRequest || !strings.Contains(body, "contact is required") {
		t.Errorf("a preview without a contact: %d, want 400 saying it is required:\n%s", status, body)
	}
	if status, _, body := post("/console/erasures/preview", url.Values{"contact": {"+15552223333"}, "provider": {"twillio"}}); status != http.StatusBadRequest ||
		!strings.Contains(body, "provider must be one of") || !strings.Contains(body, `value="&#43;15552223333"`) {
		t.Errorf("a preview with a misspelt provider: %d, want 400 naming the providers, the contact kept:\n%s", status, body)
	}
	status, _, body := post("/console/erasures/preview", url.Values{"contact": {"+1 (555) 222-3333"}})
	if status != http.StatusOK || !strings.Contains(body, `<dd id="held">conversations 1, messages 2, events 2</dd>`) || !strings.Contains(body, `id="erase-confirm"`) || conversations() != 2 {
		t.Errorf("the preview: %d, %d conversations left; want 200 counting one conversation, two messages and two events, erasing nothing:\n%s", status, conversations(), body)
	}
	if strings.Contains(body, `id="nothing-held"`) || !strings.Contains(body, `(looked up as &#43;15552223333)`) {
		t.Errorf("the preview of a contact held, typed with spaces: want the address as looked up and no warning:\n%s", body)
	}
	// A number typed without its country code matches nothing, and the page says how
	// it was looked up, before an erasure or an empty export is taken for an answer.
	status, _, body = post("/console/erasures/preview", url.Values{"contact": {"5552223333"}})
	if status != http.StatusOK || !strings.Contains(body, `<p class="error" id="nothing-held">Nothing is held about &#43;5552223333 (a phone number is matched in E.164, with its country code`) {
		t.Errorf("the preview of a number without its country code: %d, want it to say nothing is held and how it was looked up:\n%s", status, body)
	}

	status, header, body := post("/console/exports", url.Values{"contact": {"+15552223333"}})
	var doc struct {
		Conversations []struct {
			Messages []struct {
				Text string `json:"text"`
			} `json:"messages"`
		} `json:"conversations"`
	}
	if err := json.Unmarshal([]byte(body), &doc); status != 200 || err != nil || header.Get("Content-Type") != "application/json" ||
		!strings.HasPrefix(header.Get("Content-Disposition"), "attachment;") || len(doc.Conversations) != 1 || len(doc.Conversations[0].Messages) != 2 ||
		doc.Conversations[0].Messages[0].Text != "said by +15552223333" {
		t.Errorf("the export: %d %s %q (%v); want 200, a JSON attachment with the contact's conversation and its two messages:\n%.1000s", status,
			header.Get("Content-Type"), header.Get("Content-Disposition"), err, body)
	}
	if status, header, _ := post("/console/exports", url.Values{"contact": {""}}); status != http.StatusBadRequest || header.Get("Content-Disposition") != "" {
		t.Errorf("an export without a contact: %d, disposition %q; want a 400 page, not a file", status, header.Get("Content-Disposition"))
	}

	const readToken = "read-token-0123456789"
	read := testConsole(Config{Pool: pool, Eraser: eraser, ReadTokens: []string{readToken}})
	rs, ck := newSession(newCredential(roleRead, readToken), time.Now(), false)
	for _, path := range []string{"/console/erasures/preview", "/console/erasures", "/console/exports"} {
		if w := read("POST", path, url.Values{"csrf": {rs.csrf()}, "contact": {"+15552223333"}}.Encode(), ck); w.Code != http.StatusForbidden {
			t.Errorf("POST %s by a read-only session: %d, want 403", path, w.Code)
		}
	}
	if body := read("GET", "/console/erasures", "", ck).Body.String(); strings.Contains(body, `id="erase-form"`) {
		t.Errorf("a read-only session is offered the erasure form")
	}
	none, noneCSRF := adminConsole(Config{Pool: pool})
	if w := none("POST", "/console/erasures/preview", url.Values{"csrf": {noneCSRF}, "contact": {"+15552223333"}}.Encode()); w.Code != http.StatusNotFound ||
		strings.Contains(none("GET", "/console/erasures", "").Body.String(), `id="erase-form"`) {
		t.Errorf("a console without an eraser: preview %d, want 404 and no form", w.Code)
	}
	var started int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM erasures`).Scan(&started); err != nil || started != 0 {
		t.Fatalf("%d erasures before the confirmation (%v), want none", started, err)
	}

	status, header, _ = post("/console/erasures", url.Values{"contact": {"+1 555 222 3333"}})
	if to := header.Get("Location"); status != http.StatusSeeOther || to != "/console/erasures?done=erase" {
		t.Errorf("the erasure: %d to %q, want 303 to the receipts", status, to)
	}
	if body := serve("GET", "/console/erasures?done=erase", "").Body.String(); !strings.Contains(body, `<meta http-equiv="refresh" content="2">`) || !strings.Contains(body, "<td>running</td>") {
		t.Errorf("while the erasure runs, its receipt is not shown running on a page that reloads itself:\n%s", body)
	}
	for {
		more, err := eraser.RunNext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
	}
	var left int64
	if err := pool.QueryRow(ctx, `SELECT id FROM conversations`).Scan(&left); err != nil || left != kept {
		t.Errorf("after the erasure the conversation left is %d (%v), want only the other contact's, %d", left, err, kept)
	}
	receipts := serve("GET", "/console/erasures?done=erase", "").Body.String()
	if !strings.Contains(receipts, "Erasure started") || !strings.Contains(receipts, "<td>done</td>") || !strings.Contains(receipts, "conversations 1, messages 2, events 2") {
		t.Errorf("the receipts do not show the erasure done with what it removed:\n%s", receipts)
	}
	if strings.Contains(receipts, `http-equiv="refresh"`) {
		t.Errorf("the receipts page still reloads itself once every erasure is done")
	}
}

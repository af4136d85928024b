package api

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"inboxd/internal/provider/providertest"
)

type changesResponse struct {
	Data []struct {
		ID             string
		Type           string
		ConversationID int64 `json:"conversation_id"`
		Data           map[string]any
	}
	NextCursor string `json:"next_cursor"`
}

// TestChangeFeed: a consumer long-polls the feed, a webhook's message arrives as
// conversation.created then message.created (the objects as the API serves them),
// its status as message.status_changed; the stream resumes after Last-Event-ID with
// the same changes as events; bad parameters are 400 with a reason.
func TestChangeFeed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, true)
	post := func(id, body string) time.Time {
		resp, err := http.DefaultClient.Do(providertest.Request(t, "generic", a.url, "", "", "evt-"+id, []byte(body), time.Now()))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("webhook: %v %v", resp, err)
		}
		resp.Body.Close()
		return time.Now()
	}
	status, body := a.get(t, "/v1/changes", readToken)
	if first := decode[changesResponse](t, body); status != 200 || len(first.Data) != 0 || first.NextCursor != "0.0" {
		t.Fatalf("empty feed = %d %s", status, body)
	}

	type polled struct {
		page changesResponse
		at   time.Time
	}
	got := make(chan polled, 1)
	go func() {
		_, body := a.get(t, "/v1/changes?wait=30s", readToken)
		got <- polled{decode[changesResponse](t, body), time.Now()}
	}()
	time.Sleep(100 * time.Millisecond)
	acked := post("m1", `{"type":"message.sent","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m1","channel":"+15550001111","contact":"+15552223333","text":"hello"}}`)
	var page changesResponse
	select {
	case p := <-got:
		page = p.page
		t.Logf("the long poll returned %v after the webhook's acknowledgement", p.at.Sub(acked))
	case <-time.After(25 * time.Second):
		t.Fatal("the long poll did not return")
	}
	if len(page.Data) == 1 { // the message may follow its conversation in the next page
		_, body = a.get(t, "/v1/changes?wait=10s&after="+page.NextCursor, readToken)
		more := decode[changesResponse](t, body)
		page.Data, page.NextCursor = append(page.Data, more.Data...), more.NextCursor
	}
	if len(page.Data) != 2 || page.Data[0].Type != "conversation.created" || page.Data[1].Type != "message.created" ||
		page.Data[1].Data["text"] != "hello" || page.Data[0].Data["contact_address"] != "+15552223333" {
		t.Fatalf("changes = %+v", page.Data)
	}
	firstID := page.Data[0].ID

	post("s1", `{"type":"message.status","timestamp":"2026-11-25T10:00:05Z","data":{"message_id":"m1","status":"delivered"}}`)
	_, body = a.get(t, "/v1/changes?wait=10s&after="+page.NextCursor, readToken)
	if next := decode[changesResponse](t, body); len(next.Data) != 1 || next.Data[0].Type != "message.status_changed" || next.Data[0].Data["status"] != "delivered" {
		t.Errorf("after the status: %s", body)
	}

	// Each change's object is the message as the messages endpoint serves it, as it was
	// when the change happened: the creation still says "sent" after the status moved.
	_, body = a.get(t, "/v1/changes", readToken)
	all := decode[changesResponse](t, body)
	_, body = a.get(t, fmt.Sprintf("/v1/conversations/%d/messages", all.Data[0].ConversationID), readToken)
	served := decode[struct{ Data []map[string]any }](t, body)
	if len(all.Data) != 3 || len(served.Data) != 1 {
		t.Fatalf("changes %s; messages %v", body, served)
	}
	for i, want := range []string{"sent", "delivered"} {
		obj := all.Data[i+1].Data
		for k, v := range served.Data[0] {
			if k != "status" && k != "status_at" && fmt.Sprint(obj[k]) != fmt.Sprint(v) {
				t.Errorf("%s: %s = %v, the messages endpoint serves %v", all.Data[i+1].Type, k, obj[k], v)
			}
		}
		if len(obj) != len(served.Data[0]) || obj["status"] != want {
			t.Errorf("%s object = %v, want the served message's fields with status %s", all.Data[i+1].Type, obj, want)
		}
	}

	req, _ := http.NewRequest("GET", a.url+"/v1/changes/stream", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	req.Header.Set("Last-Event-ID", firstID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	// The two changes after Last-Event-ID, then one that happens while the stream is
	// open: each once.
	var events []string
	ids := map[string]bool{firstID: true}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && len(events) < 3 {
		if line := sc.Text(); strings.HasPrefix(line, "event: ") {
			if events = append(events, strings.TrimPrefix(line, "event: ")); len(events) == 2 {
				post("s2", `{"type":"message.status","timestamp":"2026-11-25T10:00:09Z","data":{"message_id":"m1","status":"read"}}`)
			}
		} else if id, ok := strings.CutPrefix(line, "id: "); ok {
			if ids[id] {
				t.Errorf("the stream sent change %s again", id)
			}
			ids[id] = true
		}
	}
	if fmt.Sprint(events) != "[message.created message.status_changed message.status_changed]" {
		t.Errorf("stream events after %s = %v", firstID, events)
	}
	// A refused stream names where its cursor came from: the header, or ?after=.
	for _, c := range []struct{ path, header, want string }{
		{"/v1/changes/stream", "nonsense", `Last-Event-ID = \"nonsense\": bad cursor: not a change id (such as 10402.4)`},
		{"/v1/changes/stream?after=nonsense", "", `after = \"nonsense\": bad cursor: not a change id (such as 10402.4)`},
	} {
		req, _ = http.NewRequest("GET", a.url+c.path, nil)
		req.Header.Set("Authorization", "Bearer "+readToken)
		if c.header != "" {
			req.Header.Set("Last-Event-ID", c.header)
		}
		bad, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, bad) // a 400's body ends; a stream that started would not
		if bad.StatusCode != 400 || !strings.Contains(string(body), c.want) || !strings.Contains(string(body), "start again without it") {
			t.Errorf("a stream at %s, Last-Event-ID %q = %d %s, want 400 saying %s", c.path, c.header, bad.StatusCode, body, c.want)
		}
	}

	for bad, reason := range map[string]string{
		"/v1/changes?after=nonsense": `after must be a change id or a next_cursor this API returned, got \"nonsense\"`,
		"/v1/changes?wait=5m":        "wait must be a duration from 0s to 60s",
		"/v1/changes?wait=soon":      "wait must be a duration from 0s to 60s",
	} {
		if status, body := a.get(t, bad, readToken); status != 400 || !strings.Contains(string(body), reason) {
			t.Errorf("%s = %d %s, want 400 saying %s", bad, status, body, reason)
		}
	}
	if status, _ := a.get(t, "/v1/changes", ""); status != 401 {
		t.Errorf("no token = %d, want 401", status)
	}
}

// TestExpiredCursor: a cursor before the feed's horizon (retention deleted changes
// after it), or ahead of every transaction the server ran (a restored database), is
// answered 410 cursor_expired, by the pages and the stream alike, saying what to do;
// the horizon itself and a cursor after it are served. Without a cursor
// the feed starts at the horizon: a change kept below it (for a subscription) is not
// served, and an empty page's next_cursor is the horizon, never a cursor that would
// expire.
func TestExpiredCursor(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	var kept, horizon, next string
	insert := func(into *string, sql string) {
		t.Helper()
		if err := a.pool.QueryRow(context.Background(), sql).Scan(into); err != nil {
			t.Fatal(err)
		}
	}
	const change = `INSERT INTO changes (type, conversation_id, data) VALUES ('conversation.created', 1, '{"id": 1}') RETURNING xid::text || '.' || seq`
	insert(&kept, change)
	insert(&horizon, `INSERT INTO changes_horizon (xid, seq) SELECT xid, seq + 1 FROM changes RETURNING xid::text || '.' || seq`)
	insert(&next, change)
	for after, want := range map[string]string{"": next, "0.0": "410", kept: "410", horizon: next, next: "", "999999999999.1": "410"} {
		path := "/v1/changes?after=" + after
		if want != "410" && want != "" {
			path += "&wait=30s" // the change is held back while older transactions on the server run
		}
		status, body := a.get(t, path, readToken)
		page := decode[changesResponse](t, body)
		switch {
		case want == "410" && (status != 410 || !strings.Contains(string(body), `"cursor_expired"`) || !strings.Contains(string(body), "follow the feed again without a cursor")):
			t.Errorf("after=%s: %d %s, want 410 cursor_expired saying what to do", after, status, body)
		case want != "410" && status != 200:
			t.Errorf("after=%s: %d %s, want 200", after, status, body)
		case want != "410" && want != "" && (len(page.Data) != 1 || page.Data[0].ID != want):
			t.Errorf("after=%s: %s, want only %s (not the change kept below the horizon)", after, body, want)
		}
	}
	a.exec(t, `DELETE FROM changes`)
	if _, body := a.get(t, "/v1/changes", readToken); decode[changesResponse](t, body).NextCursor != horizon {
		t.Errorf("an empty feed after retention: %s, want next_cursor %s, the horizon", body, horizon)
	}
	req, _ := http.NewRequest("GET", a.url+"/v1/changes/stream", nil)
	req.Header.Set("Authorization", "Bearer "+readToken)
	req.Header.Set("Last-Event-ID", kept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the status only: a stream that started would never end
	if resp.StatusCode != 410 {
		t.Errorf("a stream after an expired Last-Event-ID = %d, want 410", resp.StatusCode)
	}
}

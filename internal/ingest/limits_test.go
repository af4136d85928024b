package ingest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// rawConn opens a TCP connection to s and sends head (request line and headers, no
// terminating blank line) plus the blank line and body. It returns the connection for
// the test to continue (or stall) and a reader of the answer.
func (s *testServer) rawConn(t *testing.T, head string, body string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head+"\r\n\r\n"+body); err != nil {
		t.Fatal(err)
	}
	return conn, bufio.NewReader(conn)
}

// signedHead is the head of a generic webhook whose body is announced as length
// bytes; the signature need not match (the tests stop before it is checked).
func signedHead(id string, length int) string {
	return fmt.Sprintf("POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"webhook-id: %s\r\nwebhook-timestamp: %d\r\nwebhook-signature: v1,AAAA\r\nContent-Length: %d", id, time.Now().Unix(), length)
}

// answerWithin reads one HTTP response from r, failing if none comes within d.
func answerWithin(t *testing.T, conn net.Conn, r *bufio.Reader, d time.Duration) (*http.Response, time.Duration) {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(d))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("no answer within %s: %v", d, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, time.Since(start)
}

// TestStalledBodyIsCutOff: a client that sends headers and part of its body, then
// stalls, is answered 408 and disconnected at the read deadline; it does not hold
// its connection (and a slot, and a buffer) for ever.
func TestStalledBodyIsCutOff(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{ReadTimeout: 300 * time.Millisecond})
	conn, r := s.rawConn(t, signedHead("evt_stall", 100), `{"type":"message.rec`)
	resp, took := answerWithin(t, conn, r, 5*time.Second)
	if resp.StatusCode != http.StatusRequestTimeout || took > 3*time.Second {
		t.Errorf("stalled body: %d after %s, want 408 after about 300ms", resp.StatusCode, took)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.ReadByte(); err != io.EOF {
		t.Errorf("after the 408: %v, want the server to close the connection (EOF)", err)
	}
}

// TestEarlyRefusals: a body announced larger than the limit, and a request without
// signature headers, are refused from their headers alone, before any body byte is
// read (here none is ever sent).
func TestEarlyRefusals(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{MaxBodyBytes: 1000, ReadTimeout: time.Minute})
	tests := []struct {
		name string
		head string
		want int
	}{
		{"body too large", signedHead("evt_big", 1<<20), http.StatusRequestEntityTooLarge},
		{"no signature", "POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500", http.StatusUnauthorized},
		{"twilio without signature", "POST /webhooks/twilio HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 500", http.StatusUnauthorized},
		{"meta without signature", "POST /webhooks/meta HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500", http.StatusUnauthorized},
		{"webhook-id too long", signedHead(strings.Repeat("x", 3500), 500), http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, r := s.rawConn(t, tt.head, "")
			if resp, _ := answerWithin(t, conn, r, 5*time.Second); resp.StatusCode != tt.want || !resp.Close {
				t.Errorf("status %d (Connection: %q), want %d telling the client the connection closes", resp.StatusCode, resp.Header.Get("Connection"), tt.want)
			}
			// Nor does the server wait for the body it will not read.
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := r.ReadByte(); err != io.EOF {
				t.Errorf("after the answer: %v, want the server to close the connection (EOF)", err)
			}
		})
	}
}

// TestInFlightCap: with the slots taken (a client holding one while it sends its
// body), the next webhook is answered 503 with Retry-After at once, and is served
// again once the slot is free.
func TestInFlightCap(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{MaxInFlight: 1, ReadTimeout: time.Minute})
	slow, slowR := s.rawConn(t, signedHead("evt_slow", 50), `{"type"`)
	pgtest.Eventually(t, "the slow request holds its slot", 10*time.Second, func() (bool, error) { return len(s.h.slots) == 1, nil })
	status, body, header := s.postFull(t, "evt_next", sampleGeneric("m"))
	if status != 503 || header.Get("Retry-After") == "" || !strings.Contains(body, "SETTING_MAX_INFLIGHT") {
		t.Errorf("with every slot taken: %d %s (Retry-After %q), want 503 naming the in-flight setting with Retry-After", status, body, header.Get("Retry-After"))
	}
	slow.Close()
	_, _ = slowR.ReadByte()
	pgtest.Eventually(t, "the slot is free", 10*time.Second, func() (bool, error) { return len(s.h.slots) == 0, nil })
	if status, body, _ := s.postFull(t, "evt_next", sampleGeneric("m")); status != 200 {
		t.Errorf("after the slot is free: %d %s", status, body)
	}
}

// TestBodyMemory: bodies being received reserve their announced length, all requests
// together within BodyMemory: while stalled bodies hold it, the next webhook is
// answered 503 at once (not read into memory), and served once they are gone. A
// provider's own limit is enforced before its body is read.
func TestBodyMemory(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{BodyMemory: 2500, ReadTimeout: time.Minute})
	var stalled []net.Conn
	for i := range 2 {
		c, _ := s.rawConn(t, signedHead(fmt.Sprintf("evt_stall_%d", i), 1000), `{"type"`)
		stalled = append(stalled, c)
	}
	pgtest.Eventually(t, "two stalled bodies hold 2,000 bytes", 10*time.Second, func() (bool, error) {
		return testutil.ToFloat64(s.h.metrics.bodyBytes) == 2000, nil
	})
	body := sampleGeneric("m") // about 150 bytes: 2,150 fit, 2,000 + a 1,000 announced do not
	if status, got, _ := s.postFull(t, "evt_small", body); status != 200 {
		t.Errorf("a small body beside them: %d %s, want 200", status, got)
	}
	big := strings.Replace(body, `"hi"`, `"`+strings.Repeat("x", 900)+`"`, 1)
	status, got, header := s.postFull(t, "evt_big", big)
	if status != 503 || header.Get("Retry-After") == "" || !strings.Contains(got, "SETTING_BODY_MEMORY") {
		t.Errorf("past the body memory: %d %s, want 503 naming the setting", status, got)
	}
	for _, c := range stalled {
		c.Close()
	}
	pgtest.Eventually(t, "the reservations are released", 10*time.Second, func() (bool, error) {
		return testutil.ToFloat64(s.h.metrics.bodyBytes) == 0, nil
	})
	if status, got, _ := s.postFull(t, "evt_big", big); status != 200 {
		t.Errorf("once the stalled bodies are gone: %d %s, want 200", status, got)
	}
	form := url.Values{"MessageSid": {"SM1"}, "From": {"+1"}, "To": {"+2"}, "Body": {strings.Repeat("x", 70<<10)}}
	if status, got := s.postTwilio(t, form); status != 413 || !strings.Contains(got, "provider's limit") {
		t.Errorf("a 70 KiB Twilio post: %d %s, want 413 naming the provider's limit", status, got)
	}
}

// TestClientGoneIsNotAnOutage: a client that hangs up mid-body is counted under 499,
// never as a 503 (which alerts on the database).
func TestClientGoneIsNotAnOutage(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	conn, _ := s.rawConn(t, signedHead("evt_gone", 200), `{"type":"mess`)
	conn.Close()
	pgtest.Eventually(t, "the hang-up is counted", 10*time.Second, func() (bool, error) {
		return testutil.ToFloat64(s.h.metrics.requests.WithLabelValues("generic", "499")) == 1, nil
	})
	if n := testutil.ToFloat64(s.h.metrics.requests.WithLabelValues("generic", "503")); n != 0 {
		t.Errorf("%v requests counted as 503 for a client's hang-up", n)
	}
}

// TestRequestIDStoredWithEvents: the request id goes on every event the request
// stored.
func TestRequestIDStoredWithEvents(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	body, err := os.ReadFile("../provider/meta/testdata/batch.json")
	if err != nil {
		t.Fatal(err)
	}
	req := providertest.Request(t, "meta", s.URL, "", "", "", body, time.Now())
	req.Header.Set("X-Request-Id", "lb-req-42")
	req.Header.Set("User-Agent", strings.Repeat("u", 8<<10)) // kept, but bounded
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var n, with int
	s.pool.QueryRow(t.Context(), "SELECT count(*), count(*) FILTER (WHERE request_id = 'lb-req-42') FROM inbound_events").Scan(&n, &with)
	if n != 5 || with != 5 {
		t.Errorf("%d of %d stored events carry the request id, want 5 of 5", with, n)
	}
	var agent int
	s.pool.QueryRow(t.Context(), "SELECT max(length(headers->>'User-Agent')) FROM inbound_events").Scan(&agent)
	if agent == 0 || agent > 260 {
		t.Errorf("a stored User-Agent is %d characters of the 8,192 sent, want it kept and cut to about 256", agent)
	}
}

// TestSlowCommitOutlivesTheReadTimeout: the read timeout bounds receiving a body,
// not the commit after it. A webhook whose body arrived at once but whose commit
// waits past INBOX_READ_TIMEOUT (a locked table, within the ingest timeout) is still
// stored and acknowledged, whether its length was announced or it came chunked (read
// to its end, after which Go's server reads the connection in the background while
// the handler runs).
func TestSlowCommitOutlivesTheReadTimeout(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	const readTimeout = 300 * time.Millisecond
	s := newTestServerTimeout(t, url, Config{ReadTimeout: readTimeout}, time.Minute)
	for _, chunked := range []bool{false, true} {
		id := fmt.Sprintf("evt_slow_%v", chunked)
		unlock := lockTable(t, url)
		time.AfterFunc(3*readTimeout, unlock)
		body := sampleGeneric(id)
		req := providertest.Request(t, "generic", s.URL, "", "", id, []byte(body), time.Now())
		if chunked {
			req.ContentLength, req.Body, req.GetBody = -1, io.NopCloser(strings.NewReader(body)), nil
		}
		if status, answer := s.send(t, req); status != 200 || countEvents(t, s.pool, id) != 1 {
			t.Errorf("chunked %v: a commit that waited past the read timeout: %d %s, want 200 and the event stored", chunked, status, answer)
		}
	}
}

// postFull posts a signed generic webhook and returns status, body and headers.
func (s *testServer) postFull(t *testing.T, id, body string) (int, string, http.Header) {
	t.Helper()
	req := providertest.Request(t, "generic", s.URL, "", "", id, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestEventCap: a POST with more events than one request may carry is refused with a
// message that says the limit.
func TestEventCap(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{MaxBodyBytes: 4 << 20})
	status, body := s.postMeta(t, string(metaPost(maxEventsPerRequest+1)))
	if status != 400 || !strings.Contains(body, fmt.Sprint(maxEventsPerRequest)) {
		t.Errorf("POST of %d messages: %d %s, want 400 naming the limit", maxEventsPerRequest+1, status, body)
	}
	if status, body := s.postMeta(t, string(metaPost(maxEventsPerRequest))); status != 200 {
		t.Errorf("POST of %d messages: %d %s, want 200", maxEventsPerRequest, status, body)
	}
}

// metaPost is a Meta POST of n messages from one contact.
func metaPost(n int) []byte {
	messages := make([]string, n)
	for i := range n {
		messages[i] = fmt.Sprintf(`{"from":"15550000001","id":"wamid.%d","timestamp":"1","type":"text","text":{"body":"hi"}}`, i)
	}
	return fmt.Appendf(nil, `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"100"},"contacts":[{"wa_id":"15550000001"}],"messages":[%s]}}]}]}`,
		strings.Join(messages, ","))
}

// TestChunkedBodyIsBounded: a body sent without a Content-Length (chunked), which the
// header check cannot refuse, is still read no further than INBOX_MAX_BODY_BYTES and
// answered 413: an unauthenticated sender cannot make the server buffer what it likes.
func TestChunkedBodyIsBounded(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{MaxBodyBytes: 4096})
	body := []byte(sampleGeneric(strings.Repeat("x", 1<<20)))
	req := providertest.Request(t, "generic", s.URL, "", s.secret, "evt_chunked", body, time.Now())
	req.Body, req.ContentLength, req.GetBody = io.NopCloser(io.MultiReader(bytes.NewReader(body))), -1, nil
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "body_too_large") {
		t.Errorf("a 1 MiB chunked body: %d %s, want 413 body_too_large", resp.StatusCode, got)
	}
	if n := countEvents(t, s.pool, "evt_chunked"); n != 0 {
		t.Errorf("stored %d events of a body over the limit", n)
	}
}

package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"inboxd/internal/pgtest"
	"inboxd/internal/provider/providertest"
)

// testServer runs the webhook handlers over a real database.
type testServer struct {
	*httptest.Server
	pool   *pgxpool.Pool
	secret string // the generic provider's
	h      *Handlers
	writer *Writer
	reg    *prometheus.Registry
}

func newTestServer(t *testing.T, databaseURL string, cfg Config) *testServer {
	t.Helper()
	return newTestServerTimeout(t, databaseURL, cfg, 0)
}

// newTestServerTimeout is newTestServer with an ingest timeout (0: the default).
func newTestServerTimeout(t *testing.T, databaseURL string, cfg Config, timeout time.Duration) *testServer {
	t.Helper()
	return newTestServerLog(t, databaseURL, cfg, timeout, zap.NewNop())
}

// newTestServerLog is newTestServerTimeout logging to log.
func newTestServerLog(t *testing.T, databaseURL string, cfg Config, timeout time.Duration, log *zap.Logger) *testServer {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	cfg.SettingName = providertest.SettingName
	mux := http.NewServeMux()
	srv := httptest.NewServer(middleware.RequestID(mux))
	t.Cleanup(srv.Close)
	if cfg.Endpoints == nil { // every provider, with the test credentials; Twilio signs srv.URL
		cfg.Endpoints = providertest.Endpoints(t, srv.URL, nil)
	}
	reg := prometheus.NewRegistry()
	w := NewWriter(pool, zap.NewNop(), NewMetrics(reg), WriterConfig{Timeout: timeout, SettingName: providertest.SettingName})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	h := NewHandlers(cfg, w, log)
	for _, r := range h.Routes() {
		mux.Handle("POST "+r.Path, r.Post)
		if r.Handshake != nil {
			mux.Handle("GET "+r.Path, r.Handshake)
		}
	}
	return &testServer{Server: srv, pool: pool, secret: providertest.GenericSecret, h: h, writer: w, reg: reg}
}

func sampleGeneric(id string) string {
	return fmt.Sprintf(`{"type":"message.received","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":%q,"channel":"+15550001111","contact":"+15552223333","text":"hi"}}`, id)
}

// post sends a generic webhook signed with secret ("": unsigned) and returns status
// and body.
func (s *testServer) post(t testing.TB, id, contentType, body string, secret string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/webhooks/generic", strings.NewReader(body))
	if secret != "" {
		req = providertest.Request(t, "generic", s.URL, "", secret, id, []byte(body), time.Now())
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func countEvents(t testing.TB, pool *pgxpool.Pool, externalID string) int {
	t.Helper()
	var n int
	err := pool.QueryRow(context.Background(), "SELECT count(*) FROM inbound_events WHERE provider = 'generic' AND external_id = $1", externalID).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestGenericStatusCodes(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{MaxBodyBytes: 2048})
	key := s.secret
	wrongKey := "whsec_c2VjcmV0LW51bWJlci10d28="
	tests := []struct {
		name        string
		contentType string
		body        string
		key         string
		wantStatus  int
		wantCode    string
		wantRows    int
	}{
		{"accepted", "application/json", sampleGeneric("m"), key, 200, "", 1},
		{"charset parameter is fine", "application/json; charset=utf-8", sampleGeneric("m"), key, 200, "", 1},
		{"unsigned", "application/json", sampleGeneric("m"), "", 401, "invalid_signature", 0},
		{"wrong secret", "application/json", sampleGeneric("m"), wrongKey, 401, "invalid_signature", 0},
		{"too large", "application/json", sampleGeneric(strings.Repeat("x", 3000)), key, 413, "body_too_large", 0},
		{"form content type", "application/x-www-form-urlencoded", sampleGeneric("m"), key, 415, "unsupported_media_type", 0},
		{"not JSON", "application/json", `{"type":`, key, 400, "malformed_payload", 0},
		{"unknown type", "application/json", `{"type":"x","timestamp":"2026-11-25T10:00:00Z","data":{"message_id":"m"}}`, key, 400, "malformed_payload", 0},
		{"no message id", "application/json", `{"type":"message.status","timestamp":"2026-11-25T10:00:00Z","data":{"status":"read"}}`, key, 400, "malformed_payload", 0},
		{"bad timestamp", "application/json", `{"type":"message.status","timestamp":"yesterday","data":{"message_id":"m","status":"read"}}`, key, 400, "malformed_payload", 0},
		{"timestamp past year 9999 in UTC", "application/json", `{"type":"message.status","timestamp":"9999-12-31T23:59:59-01:00","data":{"message_id":"m","status":"read"}}`, key, 400, "malformed_payload", 0},
		{"NUL that jsonb refuses is replaced, never refused", "application/json", strings.Replace(sampleGeneric("m"), `"hi"`, `"a\u0000b"`, 1), key, 200, "", 1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("evt_%d", i)
			status, body := s.post(t, id, tt.contentType, tt.body, tt.key)
			if status != tt.wantStatus {
				t.Fatalf("status = %d (%s), want %d", status, body, tt.wantStatus)
			}
			if tt.wantCode != "" {
				var e struct {
					Error struct{ Code, Message string }
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != tt.wantCode || e.Error.Message == "" {
					t.Errorf("body = %s, want error code %q with a message", body, tt.wantCode)
				}
			}
			if got := countEvents(t, s.pool, id); got != tt.wantRows {
				t.Errorf("rows for %s = %d, want %d", id, got, tt.wantRows)
			}
		})
	}
}

func TestGenericNotConfigured(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{Endpoints: providertest.Endpoints(t, "http://x", map[string]string{"GENERIC_SECRETS": ""})})
	status, body := s.post(t, "x", "application/json", sampleGeneric("m"), providertest.GenericSecret)
	if status != 404 || !strings.Contains(body, "GENERIC_SECRETS") {
		t.Errorf("POST to unconfigured provider = %d %s, want 404 naming GENERIC_SECRETS", status, body)
	}
	// Meta's handshake, too, says how to enable the provider rather than 405.
	s = newTestServer(t, pgtest.NewDB(t), Config{Endpoints: providertest.Endpoints(t, "http://x", map[string]string{"META_APP_SECRET": "", "META_VERIFY_TOKEN": ""})})
	resp, err := http.Get(s.URL + "/webhooks/meta?hub.mode=subscribe&hub.verify_token=x&hub.challenge=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(b), "META_APP_SECRET") {
		t.Errorf("GET /webhooks/meta unconfigured = %d %s, want 404 naming META_APP_SECRET", resp.StatusCode, b)
	}
}

func TestGenericAcceptedBodyAndDuplicate(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	body := sampleGeneric("m-1")
	type answer struct {
		Events []Result `json:"events"`
	}
	var first, second answer
	for _, a := range []*answer{&first, &second} {
		status, b := s.post(t, "evt_dup", "application/json", body, s.secret)
		if status != 200 {
			t.Fatalf("status = %d %s", status, b)
		}
		if err := json.Unmarshal([]byte(b), a); err != nil || len(a.Events) != 1 {
			t.Fatalf("body %s: %v", b, err)
		}
	}
	if first.Events[0].Duplicate || !second.Events[0].Duplicate || first.Events[0].ID != second.Events[0].ID {
		t.Errorf("first = %+v, second = %+v; want same id, duplicate only the second", first.Events[0], second.Events[0])
	}
	// Counted as a dashboard reads them: two 200s, one new event and one duplicate.
	if got := testutil.ToFloat64(s.h.metrics.requests.WithLabelValues("generic", "200")); got != 2 {
		t.Errorf("inbox_ingest_requests_total{code=200} = %v, want 2", got)
	}
	for result, want := range map[string]float64{"new": 1, "duplicate": 1} {
		if got := testutil.ToFloat64(s.h.metrics.events.WithLabelValues("generic", result)); got != want {
			t.Errorf("inbox_events_ingested_total{result=%s} = %v, want %v", result, got, want)
		}
	}
	var payload, headers, lane string
	err := s.pool.QueryRow(context.Background(), "SELECT payload::text, headers::text, lane FROM inbound_events WHERE id = $1", first.Events[0].ID).Scan(&payload, &headers, &lane)
	if err != nil {
		t.Fatal(err)
	}
	if lane != "generic/+15550001111" {
		t.Errorf("stored lane = %q, want generic/ and the payload's data.channel", lane)
	}
	// A channel that Postgres text refuses (a NUL) is stored replaced, never refused.
	hostile := strings.Replace(sampleGeneric("m-nul"), `"+15550001111"`, `"ours\u0000"`, 1)
	if status, b := s.post(t, "evt_nul", "application/json", hostile, s.secret); status != 200 {
		t.Fatalf("a channel with NUL: status = %d %s", status, b)
	}
	if err := s.pool.QueryRow(context.Background(), "SELECT lane FROM inbound_events WHERE external_id = 'evt_nul'").Scan(&lane); err != nil || lane != "generic/ours\uFFFD" {
		t.Errorf("lane of a channel with NUL = %q (%v), want generic/ours\uFFFD", lane, err)
	}
	if !strings.Contains(payload, `"message_id": "m-1"`) {
		t.Errorf("stored payload = %s, want the body", payload)
	}
	if strings.Contains(strings.ToLower(headers), "signature") || !strings.Contains(headers, "Webhook-Id") {
		t.Errorf("stored headers = %s, want the allow-list (webhook-id) and never the signature", headers)
	}
}

// TestRedeliveryStorm: the same webhook from 50 connections at once is stored once
// and every request gets 200.
func TestRedeliveryStorm(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, pgtest.NewDB(t), Config{})
	const n = 50
	var wg sync.WaitGroup
	statuses := make([]int, n)
	bodies := make([]string, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			statuses[i], bodies[i] = s.post(t, "evt_storm", "application/json", sampleGeneric("storm"), s.secret)
		})
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i := range n {
		if statuses[i] != 200 {
			t.Errorf("request %d: status %d %s", i, statuses[i], bodies[i])
		}
		if strings.Contains(bodies[i], `"duplicate":false`) {
			fresh++
		}
	}
	if got := countEvents(t, s.pool, "evt_storm"); got != 1 || fresh != 1 {
		t.Errorf("rows = %d, answers with duplicate=false = %d; want 1 and 1", got, fresh)
	}
}

// TestInsertNotifies: a LISTEN connection sees {"id":N,"provider":"generic"}.
func TestInsertNotifies(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDB(t)
	s := newTestServer(t, url, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := pgtest.Listen(t, url, "inbound_events")
	status, body := s.post(t, "evt_notify", "application/json", sampleGeneric("n"), s.secret)
	if status != 200 {
		t.Fatalf("status %d %s", status, body)
	}
	var ack struct{ Events []Result }
	_ = json.Unmarshal([]byte(body), &ack)
	n, err := conn.WaitForNotification(ctx)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	if want := fmt.Sprintf(`{"id":%d,"provider":"generic"}`, ack.Events[0].ID); n.Payload != want || n.Channel != "inbound_events" {
		t.Errorf("notification %s on %s, want %s on inbound_events", n.Payload, n.Channel, want)
	}
}

// TestDatabaseGoneGives503: with the database unreachable nothing is acknowledged,
// and once it is back the provider's retry is stored.
func TestDatabaseGoneGives503(t *testing.T) {
	t.Parallel()
	direct := pgtest.NewDB(t)
	proxy, viaProxy := pgtest.NewProxy(t, direct)
	s := newTestServer(t, viaProxy, Config{})
	if status, body := s.post(t, "evt_before", "application/json", sampleGeneric("a"), s.secret); status != 200 {
		t.Fatalf("before the cut: %d %s", status, body)
	}
	proxy.Cut()
	for i := range 3 { // pooled connections die first, then new ones cannot be made
		status, body := s.post(t, "evt_during", "application/json", sampleGeneric("b"), s.secret)
		if status != 503 || !strings.Contains(body, "database_unavailable") {
			t.Errorf("try %d with the database gone: %d %s, want 503 database_unavailable", i, status, body)
		}
	}
	check, err := pgxpool.New(context.Background(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	if got := countEvents(t, check, "evt_during"); got != 0 {
		t.Errorf("rows for a 503'd event = %d, want 0", got)
	}
	proxy.Restore()
	if status, body := s.post(t, "evt_during", "application/json", sampleGeneric("b"), s.secret); status != 200 {
		t.Errorf("retry after restore: %d %s, want 200", status, body)
	}
	if got := countEvents(t, check, "evt_during"); got != 1 {
		t.Errorf("rows after retry = %d, want 1", got)
	}
}

// TestWriterStoppedAnswersUnavailable: a request the writer never took gets
// ErrUnavailable (a 503: retry), not a hang.
func TestWriterStoppedAnswersUnavailable(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	w := NewWriter(pool, zap.NewNop(), NewMetrics(nil), WriterConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	// Many times: a request is refused at the queue or queued and then refused,
	// whichever its select picks.
	for range 20 {
		done := make(chan error, 1)
		go func() {
			_, err := w.Write(context.Background(), []Event{{Provider: "generic", ExternalID: "x", Payload: []byte(`{}`), Headers: []byte(`{}`)}})
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("Write after stop = %v, want ErrUnavailable", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Write after stop hung")
		}
	}
}

package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"inboxd/internal/delivery"
	"inboxd/internal/feed"
	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/privacy"
	"inboxd/internal/processor"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/readmodel"
)

const (
	readToken  = "read-token"
	adminToken = "admin-token"
)

var (
	docOnce sync.Once
	docVal  validator.Validator
	docErrs []error
)

// openAPI returns a validator for the embedded document, built once.
func openAPI(t testing.TB) validator.Validator {
	t.Helper()
	docOnce.Do(func() {
		doc, err := libopenapi.NewDocument(OpenAPI)
		if err != nil {
			docErrs = []error{err}
			return
		}
		docVal, docErrs = validator.NewValidator(doc)
	})
	if len(docErrs) > 0 {
		t.Fatalf("openapi.yaml: %v", docErrs)
	}
	return docVal
}

// testAPI is the whole router over a real database, with a running processor.
type testAPI struct {
	url    string
	pool   *pgxpool.Pool
	router http.Handler
}

func newTestAPI(t testing.TB, withProcessor bool) *testAPI {
	t.Helper()
	pool, url := pgtest.NewPool(t)
	reg := prometheus.NewRegistry()
	hub := feed.NewHub()
	deliverer := delivery.New(pool, delivery.Config{AllowPrivate: true, SweepInterval: 100 * time.Millisecond}, zap.NewNop(), delivery.NewMetrics(reg))
	committed := func() { hub.Notify(); deliverer.Wake() }
	proc := processor.New(pool, url, processor.Config{SweepInterval: 100 * time.Millisecond, Also: map[string]func(){feed.Channel: committed}},
		zap.NewNop(), processor.NewMetrics(reg))
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(reg), ingest.WriterConfig{OnCommit: proc.Committed})
	hooks := ingest.NewHandlers(ingest.Config{Endpoints: providertest.Endpoints(t, "http://x", map[string]string{"TWILIO_AUTH_TOKEN": ""})}, w, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	eraser := privacy.NewEraser(pool, zap.NewNop(), nil, "api-test")
	if withProcessor {
		wg.Go(func() { proc.Run(ctx) })
		wg.Go(func() { eraser.Work(ctx, time.Second) })
		wg.Go(func() { deliverer.Run(ctx) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	router := NewRouter(Deps{
		Eraser: eraser, Changes: hub, Pool: pool, Deliveries: &Deliveries{AllowPrivate: true, Wake: deliverer.Wake, Ping: deliverer.Ping}, Webhooks: hooks, Listening: func() bool { return true }, Gatherer: reg,
		APITokens: []string{readToken}, AdminTokens: []string{adminToken}, Log: zap.NewNop(),
	})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return &testAPI{url: srv.URL, pool: pool, router: router}
}

// call sends a request and checks the response against openapi.yaml: any response
// the document does not describe fails the test.
func (a *testAPI) call(t testing.TB, method, path, token string, body []byte, headers ...string) (int, []byte) {
	t.Helper()
	resp, b := a.do(t, method, path, token, body, headers...)
	return resp.StatusCode, b
}

// do is call, answering the response (its body read) as well.
func (a *testAPI) do(t testing.TB, method, path, token string, body []byte, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, a.url+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if ok, errs := openAPI(t).ValidateHttpResponse(req, resp); !ok {
		for _, e := range errs {
			t.Errorf("%s %s -> %d does not match openapi.yaml: %s (%s)", method, path, resp.StatusCode, e.Message, e.Reason)
		}
	}
	return resp, b
}

func (a *testAPI) get(t testing.TB, path, token string) (int, []byte) {
	t.Helper()
	return a.call(t, "GET", path, token, nil)
}

func decode[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func (a *testAPI) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := a.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// seed writes conversations and messages directly: the API reads tables, and this
// gives exact control of times and counts. Returns the conversation ids.
func (a *testAPI) seed(t testing.TB, conversations, messagesEach int) {
	t.Helper()
	a.exec(t, `INSERT INTO inbound_events (provider, external_id, payload, state) VALUES ('generic', 'seed', '{}', 'processed')`)
	a.exec(t, `
INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
SELECT CASE WHEN c % 2 = 0 THEN 'generic' ELSE 'twilio' END, '+15550001111', '+1555' || lpad(c::text, 7, '0'),
       timestamptz '2026-11-25 10:00:00Z' + c * interval '1 minute'
FROM generate_series(1, $1) AS c`, conversations)
	a.exec(t, `
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT c.provider, c.id || '-' || m, c.id, 'inbound', c.contact_address, c.channel_address, 'message ' || m, 'received',
       timestamptz '2026-11-25 09:00:00Z' + (m / 3) * interval '1 second', (SELECT id FROM inbound_events LIMIT 1)
FROM conversations c CROSS JOIN generate_series(1, $1) AS m`, messagesEach)
	a.exec(t, "ANALYZE")
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	if ok, errs := openAPI(t).ValidateDocument(); !ok {
		for _, e := range errs {
			t.Errorf("openapi.yaml: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s at %s (line %d)", se.Reason, se.FieldPath, se.Line)
			}
		}
	}
	a := newTestAPI(t, false)
	status, body := a.get(t, "/openapi.yaml", "")
	if status != 200 || !bytes.Equal(body, OpenAPI) {
		t.Errorf("GET /openapi.yaml = %d (%d bytes), want 200 with the embedded document", status, len(body))
	}
}

func TestAuth(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/conversations", "", 401},
		{"/v1/conversations", "wrong", 401},
		{"/v1/conversations", readToken, 200},
		{"/v1/conversations", adminToken, 200}, // admin may read
		{"/v1/events", readToken, 401},         // a read token is not an admin token
		{"/v1/stats", readToken, 401},
		{"/v1/events", adminToken, 200},
		{"/v1/stats", adminToken, 200},
	} {
		req, _ := http.NewRequest("GET", a.url+tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		a.get(t, tc.path, tc.token) // and the same through the schema check
		if resp.StatusCode != tc.want || (tc.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer")) {
			t.Errorf("GET %s with %q = %d (WWW-Authenticate %q), want %d", tc.path, tc.token, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tc.want)
		}
	}
}

// TestAnEmptyTokenAdmitsNobody: a request without a token, or with an empty one, is
// refused even where an empty token was configured (the configuration drops empty
// list items; this guard does not rely on it).
func TestAnEmptyTokenAdmitsNobody(t *testing.T) {
	t.Parallel()
	h := requireToken([]string{"", "good-token"}, "API", "INBOX_API_TOKENS")(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	for header, want := range map[string]int{"": 401, "Bearer": 401, "Bearer ": 401, "Bearer  ": 401, "Bearer good-token": 204, "bearer good-token": 204} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/v1/conversations", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Authorization %q: %d, want %d", header, w.Code, want)
		}
	}
}

// TestEveryOperationChecksItsToken: every /v1 operation in openapi.yaml refuses a
// request without a token, and every one tagged admin (events, replays, erasures,
// exports, subscriptions) refuses a read token: a route wired with the wrong guard
// fails here, whichever it is. Each answer, and the answers a token gets, forbid
// caches to keep them.
func TestEveryOperationChecksItsToken(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	var doc struct {
		Paths map[string]map[string]struct {
			Tags []string `yaml:"tags"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	fill := strings.NewReplacer("{id}", "1", "{address}", "%2B15550001111")
	admin := 0
	for path, ops := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			method = strings.ToUpper(method)
			tokens := []string{""}
			if slices.Contains(op.Tags, "admin") {
				tokens = append(tokens, readToken)
				admin++
			}
			for _, token := range tokens {
				resp, body := a.do(t, method, fill.Replace(path), token, []byte("{}"))
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("%s %s with token %q = %d %s, want 401", method, path, token, resp.StatusCode, body)
				}
				if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("%s %s with token %q: Cache-Control %q, want no-store", method, path, token, cc)
				}
			}
		}
	}
	if admin < 10 {
		t.Errorf("found %d admin operations in openapi.yaml; the tags were not read", admin)
	}
	for _, c := range []struct{ path, token string }{{"/v1/conversations", readToken}, {"/v1/events", adminToken}, {"/v1/conversations/1", readToken}} {
		resp, body := a.do(t, "GET", c.path, c.token, nil)
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("GET %s = %d %s with Cache-Control %q, want no-store", c.path, resp.StatusCode, body, cc)
		}
	}
}

// With no tokens configured the API is closed, not open.
func TestNoTokensMeansClosed(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	srv := httptest.NewServer(NewRouter(Deps{Pool: pool, Gatherer: prometheus.NewRegistry(), Log: zap.NewNop(),
		Webhooks: ingest.NewHandlers(ingest.Config{}, ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{}), zap.NewNop())}))
	defer srv.Close()
	for _, token := range []string{"", "anything"} {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/conversations", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("token %q with none configured: %d, want 401", token, resp.StatusCode)
		}
	}
	// An empty token in the list (the settings drop them; a caller of this package
	// might not) admits nobody: an empty Authorization header does not match it.
	guard := requireToken([]string{""}, "API", "INBOX_API_TOKENS")(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for _, header := range []string{"", "Bearer", "Bearer ", "Bearer  "} {
		w, r := httptest.NewRecorder(), httptest.NewRequest("GET", "/v1/conversations", nil)
		r.Header.Set("Authorization", header)
		if guard.ServeHTTP(w, r); w.Code != 401 {
			t.Errorf("Authorization %q against an empty configured token: %d, want 401", header, w.Code)
		}
	}
}

// TestUnstorableIsTheClientsError: a value Postgres refuses (a data exception, a
// program limit) that reached a query is answered 400, not 503 with an error log.
func TestUnstorableIsTheClientsError(t *testing.T) {
	for code, want := range map[string]int{"22021": 400, "54000": 400, "57P01": 503} {
		w := httptest.NewRecorder()
		respondErr(zap.NewNop(), w, httptest.NewRequest("GET", "/v1/conversations", nil), fmt.Errorf("list: %w", &pgconn.PgError{Code: code}))
		if w.Code != want {
			t.Errorf("SQLSTATE %s: %d, want %d", code, w.Code, want)
		}
	}
}

func TestConversations(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 30, 2)
	// Walk every conversation, latest first, in pages of 7.
	seen := walk[readmodel.Conversation](t, a, "/v1/conversations?limit=7", readToken)
	if len(seen) != 30 {
		t.Fatalf("walked %d conversations, want 30", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if !seen[i].LastMessageAt.Before(seen[i-1].LastMessageAt) {
			t.Errorf("conversation %d (%v) not older than the one before (%v)", i, seen[i].LastMessageAt, seen[i-1].LastMessageAt)
		}
	}
	// Filters.
	// A page that holds the last row is the last: no cursor to an empty page.
	if _, body := a.get(t, "/v1/conversations?provider=twilio&limit=15", readToken); decode[page[readmodel.Conversation]](t, body).NextCursor != nil {
		t.Errorf("the page of the last 15 of 15 has a next cursor: %s", body)
	}
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"provider=twilio", 15},
		{"contact=%2B15550000007", 1},
		{"contact=+15550000007", 1}, // the "+" unencoded, as most clients send it: a space
		{"contact=15550000007", 1},
		{"contact=%2B1%20555%20000%200007", 1},
		{"since=2026-11-25T10:25:00Z", 6},
		{"since=2026-11-25t10:25:00z", 6},
		{"since=2026-11-25%2010:25:00Z", 6},
		{"since=2026-11-25T11:25:00+01:00", 6}, // "+" unencoded: a space
		{"since=2026-11-25T11:25:00%2B01:00", 6},
		{"provider=generic&since=2026-11-25T10:25:00Z", 3},
	} {
		status, body := a.get(t, "/v1/conversations?limit=200&"+tc.query, readToken)
		if got := len(decode[page[readmodel.Conversation]](t, body).Data); status != 200 || got != tc.want {
			t.Errorf("?%s: %d with %d conversations, want 200 with %d", tc.query, status, got, tc.want)
		}
	}
	// An unknown path is not in the document: checked without the schema.
	if resp, err := http.Get(a.url + "/v1/nothing-here"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /v1/nothing-here: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	// One conversation, and errors.
	id := seen[0].ID
	if status, body := a.get(t, "/v1/conversations/"+itoa(id), readToken); status != 200 || decode[readmodel.Conversation](t, body).ID != id {
		t.Errorf("GET conversation %d = %d %s", id, status, body)
	}
	for path, want := range map[string]int{
		"/v1/conversations/999999":              404,
		"/v1/conversations/abc":                 400,
		"/v1/conversations/0":                   400,
		"/v1/conversations?limit=0":             400,
		"/v1/conversations?limit=201":           400,
		"/v1/conversations?cursor=garbage":      400,
		"/v1/conversations?since=yesterday":     400,
		"/v1/conversations?provider=twillio":    400,
		"/v1/conversations/999999/messages":     404,
		"/v1/conversations/1/messages?order=up": 400,
	} {
		if status, body := a.get(t, path, readToken); status != want {
			t.Errorf("GET %s = %d %s, want %d", path, status, body, want)
		}
	}
	// Ten conversations with the same latest activity, walked in pages of 3: the
	// keyset's id breaks the tie, so a page boundary among them skips none.
	a.exec(t, `UPDATE conversations SET last_message_at = timestamptz '2026-11-26 00:00:00Z' WHERE id IN (SELECT id FROM conversations ORDER BY id LIMIT 10)`)
	tied := walk[readmodel.Conversation](t, a, "/v1/conversations?limit=3&since=2026-11-26T00:00:00Z", readToken)
	var ids []int64
	for i, c := range tied {
		if ids = append(ids, c.ID); i > 0 && c.ID >= tied[i-1].ID {
			t.Errorf("conversation %d after %d", c.ID, tied[i-1].ID)
		}
	}
	if len(ids) != 10 {
		t.Errorf("walked the tied conversations as %v, want the ten, once each, by id descending", ids)
	}
}

// TestMessagePagination walks a 1,000-message conversation in pages of 7 while new
// messages keep arriving: each message is seen once, in order, including the new ones
// (they are newer, so they come after the walker's position).
func TestMessagePagination(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 1, 1000)
	var convID int64
	a.pool.QueryRow(context.Background(), "SELECT id FROM conversations").Scan(&convID)
	type msgPage struct {
		Data       []readmodel.Message
		NextCursor *string `json:"next_cursor"`
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil && i < 200; i++ {
			a.exec(t, `INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT 'twilio', 'live-' || $2::int, $1, 'inbound', 'a', 'b', 'live', 'received', now(), (SELECT id FROM inbound_events LIMIT 1)`, convID, i)
			time.Sleep(time.Millisecond)
		}
	})
	seen := map[int64]bool{}
	var last readmodel.Message
	path := "/v1/conversations/" + itoa(convID) + "/messages?limit=7"
	pages := 0
	for {
		status, body := a.get(t, path, readToken)
		if status != 200 {
			t.Fatalf("GET %s = %d %s", path, status, body)
		}
		p := decode[msgPage](t, body)
		pages++
		for _, m := range p.Data {
			if seen[m.ID] {
				t.Fatalf("message %d seen twice", m.ID)
			}
			seen[m.ID] = true
			if last.ID != 0 && (m.SentAt.Before(last.SentAt) || m.SentAt.Equal(last.SentAt) && m.ID < last.ID) {
				t.Fatalf("message %d (%v) out of order after %d (%v)", m.ID, m.SentAt, last.ID, last.SentAt)
			}
			last = m
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/conversations/" + itoa(convID) + "/messages?limit=7&cursor=" + *p.NextCursor
	}
	stop()
	wg.Wait()
	if len(seen) < 1000 || pages < 1000/7 {
		t.Errorf("saw %d messages in %d pages, want at least 1000 in %d", len(seen), pages, 1000/7)
	}
	// Whatever arrived after the walk ended is found from the last position.
	var total int
	a.pool.QueryRow(context.Background(), "SELECT count(*) FROM messages").Scan(&total)
	status, body := a.get(t, "/v1/conversations/"+itoa(convID)+"/messages?limit=200&cursor="+*encodeCursor("messages", readmodel.Key{T: last.SentAt, ID: last.ID}), readToken)
	if rest := len(decode[msgPage](t, body).Data); status != 200 || len(seen)+rest != total {
		t.Errorf("seen %d + after the walk %d = %d, want all %d", len(seen), rest, len(seen)+rest, total)
	}
	// Newest first.
	status, body = a.get(t, "/v1/conversations/"+itoa(convID)+"/messages?order=desc&limit=3", readToken)
	desc := decode[msgPage](t, body).Data
	if status != 200 || len(desc) != 3 || desc[0].SentAt.Before(desc[2].SentAt) {
		t.Errorf("order=desc: %d %v", status, desc)
	}
	// The whole conversation newest first, in pages of 7: three messages share each
	// second, so page boundaries fall between messages of the same time.
	back := walk[readmodel.Message](t, a, "/v1/conversations/"+itoa(convID)+"/messages?order=desc&limit=7", readToken)
	byKey := func(x, y readmodel.Message) int { // descending (sent_at, id)
		return cmp.Or(y.SentAt.Compare(x.SentAt), cmp.Compare(y.ID, x.ID))
	}
	if got := len(slices.CompactFunc(slices.Clone(back), func(x, y readmodel.Message) bool { return x.ID == y.ID })); len(back) != total || got != total || !slices.IsSortedFunc(back, byKey) {
		t.Errorf("walked %d messages newest first (%d distinct, sorted %v), want all %d once each", len(back), got, slices.IsSortedFunc(back, byKey), total)
	}
}

// walk follows next_cursor from path until the last page and returns every row.
func walk[T any](t *testing.T, a *testAPI, path, token string) []T {
	t.Helper()
	var all []T
	for next := path; ; {
		status, body := a.get(t, next, token)
		if status != 200 {
			t.Fatalf("GET %s = %d %s", next, status, body)
		}
		p := decode[page[T]](t, body)
		all = append(all, p.Data...)
		if p.NextCursor == nil {
			return all
		}
		next = path + "&cursor=" + *p.NextCursor
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestReadyzReportsTheListener: a lost LISTEN connection makes the instance not ready.
func TestReadyzReportsTheListener(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	var listening atomic.Bool
	srv := httptest.NewServer(NewRouter(Deps{Pool: pool, Gatherer: prometheus.NewRegistry(), Log: zap.NewNop(),
		Listening: listening.Load,
		Webhooks:  ingest.NewHandlers(ingest.Config{}, ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{}), zap.NewNop())}))
	defer srv.Close()
	a := &testAPI{url: srv.URL, pool: pool}
	status, body := a.get(t, "/readyz", "")
	if status != 503 || !strings.Contains(string(body), `"listener":"disconnected"`) {
		t.Errorf("readyz with the listener down = %d %s, want 503 naming the listener", status, body)
	}
	listening.Store(true)
	if status, body := a.get(t, "/readyz", ""); status != 200 {
		t.Errorf("readyz with everything up = %d %s", status, body)
	}
}

// TestFindMessages: GET /v1/messages finds a message by the provider's id for it,
// whichever conversation holds it; a provider's name takes in its named senders', a
// named sender's only its own; an id no message has is an empty list; both
// parameters are required.
func TestFindMessages(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 4, 2)
	a.exec(t, `
WITH c AS (INSERT INTO conversations (provider, channel_address, contact_address, last_message_at)
           SELECT p, '+15550001111', '+15550009999', now() FROM unnest(ARRAY['generic:acme', 'generic:beta']) p RETURNING id, provider)
INSERT INTO messages (provider, provider_message_id, conversation_id, direction, sender, recipient, text, status, sent_at, inbound_event_id)
SELECT c.provider, 'shared-id', c.id, 'outbound', '+15550001111', '+15550009999', 'from ' || c.provider, 'sent', now(), (SELECT id FROM inbound_events LIMIT 1)
FROM c`)
	var twilioConv int64
	if err := a.pool.QueryRow(context.Background(), `SELECT conversation_id FROM messages WHERE provider = 'twilio' AND provider_message_id LIKE '%-2' LIMIT 1`).Scan(&twilioConv); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query string
		want  []string // the texts found, in order
	}{
		{"provider=twilio&provider_message_id=" + itoa(twilioConv) + "-2", []string{"message 2"}},
		{"provider=generic&provider_message_id=" + itoa(twilioConv) + "-2", nil}, // another provider's id
		{"provider=twilio&provider_message_id=SMnothing", nil},
		{"provider=generic&provider_message_id=shared-id", []string{"from generic:acme", "from generic:beta"}},
		{"provider=generic:beta&provider_message_id=shared-id", []string{"from generic:beta"}},
	} {
		status, body := a.get(t, "/v1/messages?"+c.query, readToken)
		found := decode[page[readmodel.Message]](t, body)
		var texts []string
		for _, m := range found.Data {
			texts = append(texts, *m.Text)
		}
		if status != 200 || !slices.Equal(texts, c.want) || found.NextCursor != nil {
			t.Errorf("GET /v1/messages?%s = %d %s, want 200 with %q", c.query, status, body, c.want)
		}
	}
	for query, want := range map[string]string{
		"provider=twilio":                          "provider and provider_message_id are both required",
		"provider_message_id=SM1":                  "provider and provider_message_id are both required",
		"provider=twillio&provider_message_id=SM1": "generic, twilio, meta",
	} {
		if status, body := a.get(t, "/v1/messages?"+query, readToken); status != 400 || !strings.Contains(string(body), want) {
			t.Errorf("GET /v1/messages?%s = %d %s, want 400 saying %q", query, status, body, want)
		}
	}
}

package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"inboxd/internal/ingest"
	"inboxd/internal/pgtest"
	"inboxd/internal/provider/generic"
	"inboxd/internal/provider/providertest"
	"inboxd/internal/readmodel"
	"inboxd/internal/store"
)

// TestRequestIDs: every response carries X-Request-Id, the client's when it is short
// and plain, a new one otherwise (a 20 KB header is not echoed or logged), and the
// request's log line carries the same id.
func TestRequestIDs(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	core, logs := observer.New(zapcore.DebugLevel)
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{})
	srv := httptest.NewServer(NewRouter(Deps{Pool: pool, Webhooks: ingest.NewHandlers(ingest.Config{}, w, zap.NewNop()),
		Gatherer: prometheus.NewRegistry(), APITokens: []string{readToken}, Log: zap.New(core)}))
	t.Cleanup(srv.Close)
	huge := strings.Repeat("x", 20<<10)
	for _, tc := range []struct {
		name, sent, path string
		echoed           bool
	}{
		{"plain id echoed", "lb-7f3a.9:x_y", "/v1/conversations", true},
		{"none sent", "", "/healthz", false},
		{"20 KB replaced", huge, "/v1/conversations", false},
		{"spaces replaced", "a b", "/nowhere", false},
		{"on a 401 too", "", "/v1/events", false},
		{"on a webhook", "wh-1", "/webhooks/generic", true},
	} {
		req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
		if tc.path == "/webhooks/generic" {
			req.Method = "POST"
		}
		if tc.sent != "" {
			req.Header.Set("X-Request-Id", tc.sent)
		}
		req.Header.Set("Authorization", "Bearer "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("X-Request-Id")
		switch {
		case got == "" || len(got) > 64:
			t.Errorf("%s: X-Request-Id %q, want one of at most 64 bytes", tc.name, got[:min(len(got), 80)])
		case tc.echoed && got != tc.sent, !tc.echoed && got == tc.sent:
			t.Errorf("%s: sent %q, got back %q", tc.name, tc.sent[:min(len(tc.sent), 80)], got)
		}
		logged := logs.FilterField(zap.String("request_id", got)).FilterMessage("http request").Len()
		if logged != 1 {
			t.Errorf("%s: %d access log lines with request_id %q, want 1", tc.name, logged, got)
		}
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if len(f.String) > 1000 {
				t.Errorf("log line %q has a %d-byte field %s", e.Message, len(f.String), f.Key)
			}
		}
	}
}

// TestBadTextFilters: a filter Postgres cannot compare (NUL, invalid UTF-8, over
// 256 bytes) is the client's error: 400, not a 503 and an error log.
func TestBadTextFilters(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	for _, path := range []string{
		"/v1/conversations?provider=%00", "/v1/conversations?contact=%ff", "/v1/events?provider=a%00b",
		"/v1/events?provider=" + strings.Repeat("p", 300),
	} {
		if status, body := a.get(t, path, adminToken); status != 400 {
			t.Errorf("GET %s = %d %s, want 400", path, status, body)
		}
	}
	// A contact is checked before it reaches a query, with the bound named: a long one
	// would otherwise match nothing, and answer 200 with an empty list.
	for _, contact := range []string{"%2B1555%00", "%ff", strings.Repeat("1", 257)} {
		status, body := a.get(t, "/v1/conversations?contact="+contact, adminToken)
		if status != 400 || !strings.Contains(string(body), "contact must be at most 256 bytes of UTF-8 text without NUL") {
			t.Errorf("GET /v1/conversations?contact=%.20s… = %d %s, want 400 naming the bound", contact, status, body)
		}
	}
	if status, body := a.call(t, "POST", "/v1/events/replay?state=dead&provider=%00", adminToken, nil); status != 400 {
		t.Errorf("bulk replay with a NUL provider = %d %s, want 400", status, body)
	}
}

// TestReadyzReportsStalledCommits: with inbound_events locked, the database still
// answers a ping, but webhooks cannot be stored: readiness says so, and recovers
// after the lock is gone and a webhook is stored.
func TestReadyzReportsStalledCommits(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewPool(t)
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{Timeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewServer(NewRouter(Deps{Pool: pool, Gatherer: prometheus.NewRegistry(), Log: zap.NewNop(),
		Webhooks: ingest.NewHandlers(ingest.Config{Endpoints: providertest.Endpoints(t, "http://x", nil)}, w, zap.NewNop())}))
	t.Cleanup(srv.Close)
	a := &testAPI{url: srv.URL, pool: pool}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err == nil {
		_, err = tx.Exec(ctx, "LOCK TABLE inbound_events IN ACCESS EXCLUSIVE MODE")
	}
	if err != nil {
		t.Fatal(err)
	}
	if status, body := a.postGeneric(t, "evt-1", []byte(genericPayload("evt-1"))); status != 503 {
		t.Fatalf("webhook during the lock: %d %s, want 503", status, body)
	}
	status, body := a.get(t, "/readyz", "")
	if status != 503 || !strings.Contains(string(body), `"ingest":"failing"`) {
		t.Errorf("readyz while commits stall = %d %s, want 503 with ingest failing (fixed words; the reason is logged)", status, body)
	}
	tx.Rollback(ctx)
	if status, body := a.postGeneric(t, "evt-1", []byte(genericPayload("evt-1"))); status != 200 {
		t.Fatalf("webhook after the lock: %d %s", status, body)
	}
	if status, body := a.get(t, "/readyz", ""); status != 200 {
		t.Errorf("readyz after a stored webhook = %d %s, want 200", status, body)
	}
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// postGeneric posts a signed generic webhook through the document check.
func (a *testAPI) postGeneric(t *testing.T, id string, body []byte) (int, []byte) {
	t.Helper()
	h, err := generic.Headers(testSecret, id, time.Now(), body)
	if err != nil {
		t.Fatal(err)
	}
	var kv []string
	for k := range h {
		kv = append(kv, k, h.Get(k))
	}
	return a.call(t, "POST", "/webhooks/generic", "", body, kv...)
}

// TestFirstHourAnswers: what a newcomer gets wrong is answered plainly: the bearer
// scheme in any case works; an unknown filter value is a 400 naming the valid ones;
// a cursor from another list is a 400 saying so; every answer carries nosniff.
func TestFirstHourAnswers(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 3, 2)
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		req, _ := http.NewRequest("GET", a.url+"/v1/conversations", nil)
		req.Header.Set("Authorization", scheme+" "+readToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("Authorization: %s <token>: %d (nosniff %q), want 200 with nosniff", scheme, resp.StatusCode, resp.Header.Get("X-Content-Type-Options"))
		}
	}
	for path, want := range map[string]string{
		"/v1/events?state=deadd":                              "pending, processing, processed, dead",
		"/v1/events?provider=twillio":                         "generic, twilio, meta",
		"/v1/conversations?provider=x":                        "generic, twilio, meta",
		"/v1/conversations?provider=x&contact=%2B15550000001": "generic, twilio, meta", // checked with the contact's subject
	} {
		status, body := a.get(t, path, adminToken)
		if status != 400 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s, want 400 naming %s", path, status, body, want)
		}
	}
	// A 400 reads alike whichever package refused it: "bad parameter: " and what was
	// wrong (not "bad request: " or "bad filter: ").
	for _, c := range []struct{ method, path, body, want string }{
		{"GET", "/v1/conversations?limit=0", "", "limit must be a whole number from 1 to 200"},
		{"POST", "/v1/events/replay?state=pending", "", "only dead or processed events can be replayed"},
		{"POST", "/v1/erasures", `{"contact": 5}`, "contact must be a string, got a number"},
		{"POST", "/v1/subscriptions", `{"url": "https://crm.example.com/x", "types": []}`, "types must name at least one of"},
	} {
		status, body := a.call(t, c.method, c.path, adminToken, []byte(c.body))
		msg := decode[struct {
			Error struct{ Code, Message string }
		}](t, body).Error
		if status != 400 || msg.Code != "bad_parameter" || !strings.HasPrefix(msg.Message, "bad parameter: "+c.want) {
			t.Errorf("%s %s = %d %+v, want 400 bad_parameter saying \"bad parameter: %s\" first", c.method, c.path, status, msg, c.want)
		}
	}
	for method, path := range map[string]string{"POST": "/webhooks/twillio", "GET": "/webhooks/whatsapp"} {
		req, _ := http.NewRequest(method, a.url+path, strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(body), "/webhooks/generic, /webhooks/twilio, /webhooks/meta") {
			t.Errorf("%s %s = %d %s, want 404 naming the webhooks", method, path, resp.StatusCode, body)
		}
	}
	// A path that names no endpoint is answered with the endpoints near it.
	for path, want := range map[string]string{
		"/v1/conversation":              `near it: /v1/changes, /v1/contacts, /v1/conversations, /v1/erasures, /v1/events, /v1/messages, /v1/stats, /v1/subscriptions (`,
		"/v1/conversations/7/mesages":   `near it: /v1/conversations/{id}/messages (`,
		"/v1/subscriptions/1/frob":      `/v1/subscriptions/{id}/deliveries, /v1/subscriptions/{id}/pause, /v1/subscriptions/{id}/ping, /v1/subscriptions/{id}/previous-secret, /v1/subscriptions/{id}/replay, /v1/subscriptions/{id}/resume, /v1/subscriptions/{id}/rotate-secret (`,
		"/frobnicate":                   `no such endpoint; GET /openapi.yaml lists them all`,
		"/v1/events/1/replay/now/again": `near it: /v1/events/{id}/replay (`,
	} {
		resp, err := http.Get(a.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s, want 404 saying %s", path, resp.StatusCode, body, want)
		}
	}
	// A method a path does not take is a 405 that says which it takes, in Allow too.
	for target, allow := range map[string]string{"POST /v1/stats": "GET, HEAD", "GET /webhooks/generic": "POST", "PUT /v1/subscriptions/1": "GET, HEAD, PATCH, DELETE"} {
		method, path, _ := strings.Cut(target, " ")
		req, _ := http.NewRequest(method, a.url+path, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != allow || !strings.Contains(string(body), "it takes "+allow) {
			t.Errorf("%s = %d (Allow %q) %s, want 405 with Allow: %s, said", target, resp.StatusCode, resp.Header.Get("Allow"), body, allow)
		}
	}
	_, body := a.get(t, "/v1/conversations?limit=1", readToken)
	next := decode[page[readmodel.Conversation]](t, body).NextCursor
	if next == nil {
		t.Fatal("no next cursor on a page of 1 of 3")
	}
	if status, body := a.get(t, "/v1/events?cursor="+*next, adminToken); status != 400 || !strings.Contains(string(body), "belongs to the conversations list") {
		t.Errorf("a conversations cursor on /v1/events = %d %s, want 400 saying whose it is", status, body)
	}
}

// TestHeadIsAGetWithoutItsBody: every GET route answers HEAD (RFC 9110 asks it of
// every server; uptime checks and `curl -I` use it) with the GET's status and
// headers and no body. A HEAD's query is checked as the GET's is, and the change
// feed's long poll and stream answer a HEAD at once instead of holding it.
func TestHeadIsAGetWithoutItsBody(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 1, 1)
	// A server of its own, whose handlers' contexts end with the test: a HEAD whose
	// handler never ended would otherwise hold up the server's Close for ever.
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewUnstartedServer(a.router)
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(cancel)
	// One connection for every request, so that a HEAD whose handler does not end
	// holds up the next one. The time limit is very wide: the long poll below would
	// hold a GET for its full minute.
	client := &http.Client{Timeout: 45 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	t.Cleanup(client.CloseIdleConnections)
	head := func(path, token string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("HEAD", srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("HEAD %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(body) > 0 {
			t.Errorf("HEAD %s sent a body of %d bytes", path, len(body))
		}
		return resp
	}
	for _, c := range []struct{ path, token string }{
		{"/healthz", ""},
		{"/readyz", ""},
		{"/metrics", ""},
		{"/openapi.yaml", ""},
		{"/v1/conversations", readToken},
		{"/v1/conversations", ""},
		{"/v1/conversations/1", readToken},
		{"/v1/conversations/999", readToken},
		{"/v1/conversations?limt=1", readToken},
		{"/v1/stats", adminToken},
		{"/v1/events?state=deadd", adminToken},
	} {
		get, _ := a.do(t, "GET", c.path, c.token, nil)
		resp := head(c.path, c.token)
		if resp.StatusCode != get.StatusCode || resp.Header.Get("Content-Type") != get.Header.Get("Content-Type") {
			t.Errorf("HEAD %s = %d %q, want the GET's %d %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), get.StatusCode, get.Header.Get("Content-Type"))
		}
	}
	for path, want := range map[string]string{
		"/v1/changes?wait=60s": "application/json",
		"/v1/changes/stream":   "text/event-stream",
	} {
		if resp := head(path, readToken); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != want {
			t.Errorf("HEAD %s = %d %q, want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
		head("/healthz", "") // on the same connection: answered only once the HEAD's handler has ended
	}
}

// TestReadinessPingsOncePerSecond: however often /readyz and the gauge ask, the
// database is pinged at most once a second (the endpoint is open to anyone).
func TestReadinessPingsOncePerSecond(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{})
	r := NewReadiness(Deps{Pool: pool, Log: zap.NewNop(), Webhooks: ingest.NewHandlers(ingest.Config{}, w, zap.NewNop())})
	before := pool.Stat().AcquireCount()
	start := time.Now()
	for range 200 {
		r.Check(context.Background())
	}
	pings := pool.Stat().AcquireCount() - before
	if limit := int64(time.Since(start)/time.Second) + 1; pings > limit {
		t.Errorf("200 checks in %s pinged the database %d times, want at most %d", time.Since(start), pings, limit)
	}
}

// TestReadyzReportsAMisconfiguredPooler: while the pools report lost prepared
// statements, readiness fails with database: misconfigured (the log names the fix).
func TestReadyzReportsAMisconfiguredPooler(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewPool(t)
	var lost atomic.Bool
	w := ingest.NewWriter(pool, zap.NewNop(), ingest.NewMetrics(nil), ingest.WriterConfig{})
	r := NewReadiness(Deps{Pool: pool, Log: zap.NewNop(), Webhooks: ingest.NewHandlers(ingest.Config{}, w, zap.NewNop()),
		Misconfigured: func() error {
			if lost.Load() {
				return store.ErrPoolerMisconfigured
			}
			return nil
		}})
	if ok, parts := r.Check(context.Background()); !ok || parts["database"] != "ok" {
		t.Errorf("ready = %v %v, want ready", ok, parts)
	}
	lost.Store(true)
	if ok, parts := r.Check(context.Background()); ok || parts["database"] != "misconfigured" {
		t.Errorf("with statements lost: ready = %v %v, want not ready, database misconfigured", ok, parts)
	}
}

// TestUnknownQueryParameters: a misspelt or unknown query parameter is a 400 that
// names it and the parameters the endpoint takes, not a list answered as if there
// were no filter; so is a parameter given twice, which would be read as its first
// value alone; known ones, a "+" sent unencoded included, still work; and a caller
// without a token learns nothing of the parameters (401 first).
func TestUnknownQueryParameters(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	a.seed(t, 2, 1)
	for _, c := range []struct {
		path, token string
		status      int
		want        []string // in the body
	}{
		{"/v1/conversations?contct=%2B15550000001", readToken, 400, []string{`unknown parameter \"contct\"`, "GET /v1/conversations takes limit, cursor, provider, contact, since"}},
		{"/v1/conversations?contact=+15550000001&limit=5", readToken, 200, nil},
		{"/v1/conversations/1?limit=5", readToken, 400, []string{`\"limit\"`, "takes no query parameters"}},
		{"/v1/conversations/1/messages?orderby=desc", readToken, 400, []string{`\"orderby\"`, "limit, cursor, order"}},
		{"/v1/events?stat=dead", adminToken, 400, []string{`\"stat\"`, "state"}},
		{"/v1/events?b=1&a=2&state=dead", adminToken, 400, []string{`unknown parameter \"a\", \"b\";`}},
		{"/v1/events?g=1&f=1&e=1&d=1&c=1&b=1&a=1", adminToken, 400, []string{`\"a\", \"b\", \"c\", \"d\", \"e\", …;`}},
		{"/v1/events?" + strings.Repeat("x", 100) + "=1", adminToken, 400, []string{`\"` + strings.Repeat("x", 64) + `…\";`}},
		{"/v1/events?state=dead", adminToken, 200, nil},
		{"/v1/events?state=dead&state=pending", adminToken, 400, []string{"state given more than once; each parameter takes one value"}},
		{"/v1/conversations?provider=meta&limit=5&provider=generic&limit=6", readToken, 400, []string{"limit, provider given more than once"}},
		{"/v1/conversations?provider=meta&provder=generic&provider=twilio", readToken, 400, []string{`unknown parameter \"provder\"`}},
		{"/v1/conversations?contct=x", "", 401, nil},
	} {
		status, body := a.get(t, c.path, c.token)
		if status != c.status {
			t.Errorf("GET %s = %d %s, want %d", c.path, status, body, c.status)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("GET %s = %s, want it to say %s", c.path, body, w)
			}
		}
	}
	if status, body := a.call(t, "POST", "/v1/events/replay?state=dead&limt=5", adminToken, nil); status != 400 || !strings.Contains(string(body), `\"limt\"`) {
		t.Errorf("POST /v1/events/replay?limt=5 = %d %s, want 400 naming limt", status, body)
	}
}

// TestQueryParamsCoverRoutes: every /v1 route is an operation of openapi.yaml, so
// knownQuery checks every one (it lets through what the document does not describe).
func TestQueryParamsCoverRoutes(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, false)
	n := 0
	err := chi.Walk(a.router.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if strings.HasPrefix(route, "/v1/") {
			n++
			if _, ok := queryParams[method+" "+route]; !ok {
				t.Errorf("%s %s is not in openapi.yaml: knownQuery would not check its parameters", method, route)
			}
		}
		return nil
	})
	if err != nil || n < 20 {
		t.Fatalf("walked %d /v1 routes (%v), want them all", n, err)
	}
}

// TestMustQueryParams: an operation's query parameters are its own and its path
// item's, written in full or as a $ref to components; path parameters and the path
// item's other keys are not operations' parameters.
func TestMustQueryParams(t *testing.T) {
	t.Parallel()
	doc := `
paths:
  /v1/things/{id}:
    summary: not an operation
    parameters:
      - {name: id, in: path}
      - {name: trace, in: query}
    get:
      parameters:
        - $ref: '#/components/parameters/limit'
        - {name: order, in: query}
    delete: {}
  /v1/other:
    post:
      parameters:
        - {name: x-key, in: header}
components:
  parameters:
    limit: {name: limit, in: query}
`
	got := mustQueryParams([]byte(doc))
	want := map[string][]string{
		"GET /v1/things/{id}":    {"trace", "limit", "order"},
		"DELETE /v1/things/{id}": {"trace"},
		"POST /v1/other":         {},
	}
	if len(got) != len(want) {
		t.Errorf("operations %v, want %v", got, want)
	}
	for op, names := range want {
		if !slices.Equal(got[op], names) {
			t.Errorf("%s takes %q, want %q", op, got[op], names)
		}
	}
}

// Package console is the operators' web console (docs/console.md), served by inboxd
// itself at /console from embedded files: server-rendered HTML, one stylesheet, no
// inline script (the live page loads one file of its own), readable with JavaScript
// off. Behind the admin
// tokens (everything) and INBOX_CONSOLE_READ_TOKENS (reading only), through a login
// form and a session cookie (session.go); every state change is a POST with the
// session's CSRF token; every answer carries a Content-Security-Policy without
// inline scripts or styles. Nothing personal goes in a URL: pages are addressed by
// event ids and enumerated filters.
//
// It reads through internal/readmodel and replays through it (which goes through
// the processor's Requeue); subscriptions are changed through internal/delivery,
// contacts erased and exported through internal/privacy. It owns no table.
package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"inboxd/internal/delivery"
	"inboxd/internal/privacy"
	"inboxd/internal/processor"
	"inboxd/internal/readmodel"
	"inboxd/internal/redact"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what the console needs.
type Config struct {
	Pool        *pgxpool.Pool
	AdminTokens []string
	ReadTokens  []string // INBOX_CONSOLE_READ_TOKENS
	// TraceURL links an event's trace id: a pattern with {trace_id}, such as
	// http://localhost:16686/trace/{trace_id} (Jaeger); empty: the id is shown
	// without a link.
	TraceURL string
	// Health reports the service's readiness and each part's state for the overview.
	Health func(ctx context.Context) (ready bool, parts map[string]string)
	// Changes returns a channel closed when the processor next commits (the change
	// feed's hub, feed.Hub.Next): it wakes the live page's stream. nil: it polls.
	Changes func() <-chan struct{}
	// Redaction is the redaction policy, so that a contact filter finds addresses
	// stored hashed; nil: none.
	Redaction *redact.Policy
	// Version is the build this process runs (`inboxd version`), shown on the
	// overview: during a rolling upgrade, which one served the page.
	Version string
	// Retention and DeadRetention are the settings, shown on the overview.
	Retention, DeadRetention time.Duration
	// WakeReplays makes this process's replay runner start a job just confirmed.
	WakeReplays func()
	// WakeDeliveries tells this process's deliverer that a subscription was resumed or
	// replayed; Ping sends a subscription's endpoint a signed ping
	// (delivery.Deliverer's). nil: the deliverer sees the change at its next pass;
	// no ping button.
	WakeDeliveries func()
	Ping           func(ctx context.Context, id int64) (delivery.Ping, error)
	// Eraser erases contacts (its Work runs elsewhere in the process); nil: the
	// console neither erases nor exports.
	Eraser *privacy.Eraser
	// AllowPrivate is INBOX_DELIVERY_ALLOW_PRIVATE: a subscription made here may
	// name a private address.
	AllowPrivate bool
	Log          *zap.Logger
}

// contentSecurityPolicy: the pages' own stylesheet and scripts (static/), nothing
// inline, nothing from elsewhere; the live stream is same-origin (connect-src).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// console serves the pages.
type console struct {
	cfg   Config
	creds []credential
	pages map[string]*template.Template
	now   func() time.Time
	// The live stream's intervals: liveRecheck and liveHeartbeat, a test's own.
	liveRecheck, liveHeartbeat time.Duration
}

// New returns the console's handler, to be mounted at /console.
func New(cfg Config) http.Handler {
	c := &console{cfg: cfg, pages: parsePages(), now: time.Now, liveRecheck: liveRecheck, liveHeartbeat: liveHeartbeat}
	for _, t := range cfg.AdminTokens {
		c.creds = append(c.creds, newCredential(roleAdmin, t))
	}
	for _, t := range cfg.ReadTokens {
		c.creds = append(c.creds, newCredential(roleRead, t))
	}
	r := chi.NewRouter()
	r.Use(headers, middleware.GetHead) // HEAD wherever GET is served, as in the API

	static, _ := fs.Sub(staticFS, "static")
	r.Handle("/static/*", http.StripPrefix("/console/static/", http.FileServer(http.FS(static))))
	r.Get("/", c.loginPage)
	r.Post("/login", c.login)
	r.Group(func(r chi.Router) {
		r.Use(c.requireSession)
		r.Post("/logout", c.logout)
		r.With(c.takes()).Get("/overview", c.overview)
		r.With(c.takes("state", "provider", "external_id", "from", "to", "before", "contact", "text", "path", "error")).Get("/events", c.events)
		r.Post("/events", c.events) // a filter with a contact or payload text: kept out of the URL
		r.With(c.takes("requeued")).Get("/events/{id}", c.event)
		r.Post("/events/{id}/replay", c.replay)
		r.With(c.takes()).Get("/failures", c.failures)
		r.With(c.takes("at", "id", "contact")).Get("/conversations", c.conversations)
		r.Post("/conversations", c.conversations) // a contact search: the address stays out of the URL
		r.With(c.takes()).Get("/conversations/{id}", c.conversation)
		r.With(c.takes("done")).Get("/subscriptions", c.subscriptions)
		r.With(c.takes("state", "before")).Get("/subscriptions/{id}/deliveries", c.deliveries)
		r.Post("/subscriptions", c.createSubscription)
		r.Post("/subscriptions/{id}/{action:pause|resume|replay|ping|end-previous}", c.subscriptionAction)
		r.Post("/subscriptions/{id}/rotate", c.rotateSecret)
		r.With(c.takes("done")).Get("/subscriptions/{id}/secret", c.secret)
		r.With(c.takes()).Get("/subscriptions/{id}/edit", c.editSubscription)
		r.Post("/subscriptions/{id}/edit", c.editSubscription)
		r.Post("/subscriptions/{id}/delete", c.deleteSubscription)
		r.With(c.takes("done")).Get("/erasures", c.erasures)
		r.Post("/erasures/preview", c.erasurePreview)
		r.Post("/erasures", c.startErasure)
		r.Post("/exports", c.export)
		r.Post("/replays/preview", c.replayPreview)
		r.Post("/replays", c.replayStart)
		r.With(c.takes()).Get("/replays", c.replays)
		r.With(c.takes()).Get("/replays/{id}", c.replayJob)
		r.Post("/replays/{id}/cancel", c.replayCancel)
		r.With(c.takes()).Get("/live", c.live)
		r.With(c.takes("after")).Get("/live/stream", c.liveStream)
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusNotFound, "No such page.")
	})
	// A form's answer opened by its address (a bookmark, a link pasted) is a GET of a
	// POST-only route: say so rather than chi's bare 405.
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusMethodNotAllowed, "This address answers a form's button, not a visit: go back to the page with the form and use it there.")
	})
	return r
}

// takes refuses a page's address whose query names a parameter the page does not
// read, with the ones it does: a misspelt filter in a hand-made or pasted link
// (/console/events?stat=dead) would otherwise show every event as if it had matched.
func (c *console) takes(names ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var unknown []string
			for name := range r.URL.Query() {
				if !slices.Contains(names, name) {
					unknown = append(unknown, strconv.Quote(clip(name, 32)))
				}
			}
			if len(unknown) == 0 {
				next.ServeHTTP(w, r)
				return
			}
			slices.Sort(unknown)
			if len(unknown) > 5 {
				unknown = append(unknown[:5], "…")
			}
			takes := "no parameters in its address"
			if len(names) > 0 {
				takes = strings.Join(names, ", ")
			}
			c.fail(w, r, nil, http.StatusBadRequest, fmt.Sprintf("This page does not take %s in its address; it takes %s. Check the link, or use the page's own filters.",
				strings.Join(unknown, ", "), takes))
		})
	}
}

// headers are on every answer: the CSP, no framing, no caching of pages that show
// payloads, no referrer leaving the console.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// maxFormBytes bounds a console form's body (a token, a CSRF token, a contact).
const maxFormBytes = 16 << 10

type sessionKey struct{}

func sessionOf(r *http.Request) session {
	s, _ := r.Context().Value(sessionKey{}).(session)
	return s
}

// requireSession sends a request without a valid session to the login page, and
// refuses a POST without the session's CSRF token (403).
func (c *console) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := readSession(r, c.creds, c.now())
		if !ok {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/console/", http.StatusSeeOther)
				return
			}
			c.fail(w, r, nil, http.StatusForbidden, "Your session has ended: log in again.")
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes) // a form of a few fields
		}
		if r.Method == http.MethodPost && !validCSRF(s, r.PostFormValue("csrf")) {
			c.fail(w, r, &s, http.StatusForbidden, "This form is out of date or did not come from the console (no valid CSRF token). Go back, reload the page and try again.")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	})
}

// view is what every page's template gets.
type view struct {
	Title   string
	Nav     string // the current section
	Session *session
	CSRF    string
	Admin   bool
	Flash   string
	Error   string
	Data    any
	Script  string // a script of the console's own (static/), for the pages that have one
	Refresh int    // seconds after which the page reloads itself (a running job's progress); 0: never
}

func (c *console) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	if s, ok := r.Context().Value(sessionKey{}).(session); ok && v.Session == nil {
		v.Session = &s
	}
	if v.Session != nil {
		v.CSRF, v.Admin = v.Session.csrf(), v.Session.admin()
	}
	// The page is made in full before anything is sent, so that a template that fails
	// on the data it is given answers a 500, not half a page with a 200.
	var b bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&b, "layout", v); err != nil {
		c.cfg.Log.Error("console page failed to render", zap.String("page", page), zap.Error(err))
		if page != "error" {
			c.fail(w, r, nil, http.StatusInternalServerError, "This page could not be shown (the service's log has the error).")
		} else {
			http.Error(w, "The console could not show its error page (the service's log has the error).", http.StatusInternalServerError)
		}
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// fail answers an error page that says what happened and what to do.
func (c *console) fail(w http.ResponseWriter, r *http.Request, s *session, status int, msg string) {
	c.render(w, r, status, "error", view{Title: http.StatusText(status), Session: s, Error: msg})
}

// dbFail answers a database error: the operator sees that it is one, the log has it.
func (c *console) dbFail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, readmodel.ErrNotFound) {
		c.fail(w, r, nil, http.StatusNotFound, err.Error())
		return
	}
	if errors.Is(err, readmodel.ErrBadFilter) {
		c.fail(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	c.cfg.Log.Error("console", zap.String("route", chi.RouteContext(r.Context()).RoutePattern()), zap.Error(err))
	c.fail(w, r, nil, http.StatusServiceUnavailable, "The database did not answer; reload in a moment. (The service's log has the error.)")
}

// pathID reads the page's {id}, answering 400 when it is not one.
func (c *console) pathID(w http.ResponseWriter, r *http.Request, what string) (int64, bool) {
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	if err != nil || id < 1 {
		c.fail(w, r, nil, http.StatusBadRequest, "The "+what+" id in the address must be a positive whole number.")
		return 0, false
	}
	return id, true
}

// ---- login ----

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := readSession(r, c.creds, c.now()); ok {
		http.Redirect(w, r, "/console/overview", http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", view{Title: "Log in"})
}

func (c *console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	cred, ok := login(c.creds, r.PostFormValue("token"))
	if !ok {
		msg := "That token is not one of INBOX_ADMIN_TOKENS or INBOX_CONSOLE_READ_TOKENS."
		if len(c.creds) == 0 {
			msg = "No token is configured: set INBOX_ADMIN_TOKENS (or INBOX_CONSOLE_READ_TOKENS to look only) and restart."
		}
		c.render(w, r, http.StatusUnauthorized, "login", view{Title: "Log in", Error: msg})
		return
	}
	_, ck := newSession(cred, c.now(), secure(r))
	http.SetCookie(w, ck)
	c.cfg.Log.Info("console login", zap.String("role", cred.role))
	http.Redirect(w, r, "/console/overview", http.StatusSeeOther)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, sessionCookie("", -1, secure(r)))
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

// ---- pages ----

type overviewData struct {
	Stats  readmodel.Stats
	Ready  bool
	Parts  map[string]string
	Oldest string
	Charts []chart
	// Retention: the settings, and the oldest processed and dead events kept.
	Retention, DeadRetention string
	OldestProcessed          string
	OldestDead               string
	Outbound                 delivery.Outbound
	Version                  string
}

// age says how old the oldest event of a state is.
func age(d time.Duration) string {
	switch {
	case d <= 0:
		return "none is kept"
	case d >= 48*time.Hour:
		return "the oldest kept is " + strconv.Itoa(int(d/(24*time.Hour))) + " days old"
	}
	return "the oldest kept is " + d.Round(time.Second).String() + " old"
}

// duration shows a retention setting.
func duration(d time.Duration) string {
	if d <= 0 {
		return "off (kept for ever)"
	}
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + " days"
	}
	return d.String()
}

func (c *console) overview(w http.ResponseWriter, r *http.Request) {
	st, err := readmodel.ReadStats(r.Context(), c.cfg.Pool)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	d := overviewData{Stats: st, Oldest: "none pending", Version: c.cfg.Version}
	if st.OldestPendingAgeSeconds != nil {
		d.Oldest = (time.Duration(*st.OldestPendingAgeSeconds * float64(time.Second))).Round(time.Millisecond).String()
	}
	if c.cfg.Health != nil {
		d.Ready, d.Parts = c.cfg.Health(r.Context())
	}
	now := c.now()
	ms, err := processor.ReadMinutes(r.Context(), c.cfg.Pool, now.Add(-chartMinutes*time.Minute))
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	slots := minuteSlots(ms, now, chartMinutes)
	d.Charts = []chart{throughputChart(slots), latencyChart(slots)}
	d.Retention, d.DeadRetention = duration(c.cfg.Retention), duration(c.cfg.DeadRetention)
	d.OldestProcessed, d.OldestDead = age(st.OldestProcessedAge), age(st.OldestDeadAge)
	if d.Outbound, err = delivery.ReadOutbound(r.Context(), c.cfg.Pool); err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Data: d})
}

type eventData struct {
	Event    readmodel.EventDetail
	Payload  string
	Headers  string
	Message  string
	TraceID  string
	TraceURL string
}

func (c *console) event(w http.ResponseWriter, r *http.Request) {
	id, ok := c.pathID(w, r, "event")
	if !ok {
		return
	}
	e, err := readmodel.ShowEvent(r.Context(), c.cfg.Pool, id)
	if errors.Is(err, readmodel.ErrNotFound) {
		c.fail(w, r, nil, http.StatusNotFound, fmt.Sprintf("Event %d is not stored: no event had that id, or retention has deleted it "+
			"(processed events after INBOX_RETENTION, dead ones after INBOX_DEAD_RETENTION; the messages they made stay).", id))
		return
	}
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	d := eventData{Event: e, Payload: pretty(e.Payload), Headers: pretty(e.Headers)}
	if e.Message != nil {
		b, _ := json.MarshalIndent(e.Message, "", "  ")
		d.Message = string(b)
	}
	var tp *string
	if err := c.cfg.Pool.QueryRow(r.Context(), `SELECT traceparent FROM inbound_events WHERE id = $1`, id).Scan(&tp); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		c.dbFail(w, r, err)
		return
	}
	if tp != nil {
		if parts := strings.Split(*tp, "-"); len(parts) == 4 {
			d.TraceID = parts[1]
			if c.cfg.TraceURL != "" {
				d.TraceURL = strings.ReplaceAll(c.cfg.TraceURL, "{trace_id}", d.TraceID)
			}
		}
	}
	v := view{Title: "Event " + strconv.FormatInt(id, 10), Nav: "events", Data: d}
	if r.URL.Query().Get("requeued") == "1" {
		v.Flash = "Requeued: it is pending again and will be processed in a moment (reload to see)."
	}
	c.render(w, r, http.StatusOK, "event", v)
}

func pretty(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

// replay requeues one dead or processed event (admin only).
func (c *console) replay(w http.ResponseWriter, r *http.Request) {
	if !c.requireAdmin(w, r, "replay") {
		return
	}
	id, ok := c.pathID(w, r, "event")
	if !ok {
		return
	}
	n, err := readmodel.Replay(r.Context(), c.cfg.Pool, []int64{id})
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.cfg.Log.Info("console replay", zap.Int64("event_id", id), zap.Int64("requeued", n))
	http.Redirect(w, r, "/console/events/"+strconv.FormatInt(id, 10)+"?requeued=1", http.StatusSeeOther)
}

// failureGroup is the dead events of one provider with one error.
type failureGroup struct {
	Provider  string
	Error     string
	Count     int64
	FirstSeen time.Time
	LastSeen  time.Time
	LatestID  int64
}

// failureGroups groups the dead events by provider and error, through the partial
// index of dead events (their number is bounded by INBOX_DEAD_RETENTION).
const failureGroups = `
SELECT provider, coalesce(last_error, ''), count(*), min(received_at), max(received_at), max(id)
FROM inbound_events
WHERE state = 'dead'
GROUP BY 1, 2
ORDER BY 3 DESC, 6 DESC
LIMIT 200`

func (c *console) failures(w http.ResponseWriter, r *http.Request) {
	rows, err := c.cfg.Pool.Query(r.Context(), failureGroups)
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	var groups []failureGroup
	var g failureGroup
	_, err = pgx.ForEachRow(rows, []any{&g.Provider, &g.Error, &g.Count, &g.FirstSeen, &g.LastSeen, &g.LatestID}, func() error {
		groups = append(groups, g)
		return nil
	})
	if err != nil {
		c.dbFail(w, r, err)
		return
	}
	c.render(w, r, http.StatusOK, "failures", view{Title: "Failures", Nav: "failures", Data: groups})
}

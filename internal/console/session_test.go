package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"
)

func withCookie(value string) *http.Request {
	r := httptest.NewRequest("GET", "/console/overview", nil)
	r.AddCookie(&http.Cookie{Name: cookieName, Value: value})
	return r
}

// TestSessions: a session's cookie is accepted by a process with the same tokens and
// refused when tampered with (another role, a later expiry, another signature),
// expired, or signed with a token no longer configured; its CSRF token differs from
// another session's.
func TestSessions(t *testing.T) {
	admin, read := newCredential(roleAdmin, "admin-token-0123456789"), newCredential(roleRead, "read-token-0123456789")
	creds := []credential{admin, read}
	now := time.Now()
	s, ck := newSession(read, now, false)
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/console" {
		t.Errorf("cookie %+v, want HttpOnly, SameSite=Strict, Path=/console", ck)
	}
	got, ok := readSession(withCookie(ck.Value), creds, now)
	if !ok || got.role != roleRead || got.csrf() != s.csrf() {
		t.Fatalf("own cookie: %+v %v", got, ok)
	}
	other, _ := newSession(read, now, false)
	if other.csrf() == s.csrf() {
		t.Error("two sessions share a CSRF token")
	}
	if !validCSRF(s, s.csrf()) || validCSRF(s, other.csrf()) || validCSRF(s, "") || validCSRF(session{}, "") {
		t.Error("a form's CSRF token is not checked against its own session's")
	}
	parts := strings.SplitN(ck.Value, ".", 2)
	for name, v := range map[string]string{
		"role raised":     "admin." + parts[1],
		"expiry extended": strings.Replace(ck.Value, strings.Split(ck.Value, ".")[1], "99999999999", 1),
		"signature cut":   ck.Value[:strings.LastIndexByte(ck.Value, '.')],
		"signature other": ck.Value[:strings.LastIndexByte(ck.Value, '.')+1] + "AAAA",
		"empty":           "",
		"garbage":         "....",
	} {
		if _, ok := readSession(withCookie(v), creds, now); ok {
			t.Errorf("%s: accepted %q", name, v)
		}
	}
	if _, ok := readSession(withCookie(ck.Value), creds, now.Add(sessionLength+time.Minute)); ok {
		t.Error("an expired session is accepted")
	}
	if _, ok := readSession(withCookie(ck.Value), []credential{admin}, now); ok {
		t.Error("a session of a token no longer configured is accepted")
	}
	if _, ok := login(append(creds, newCredential(roleRead, "")), ""); ok {
		t.Error("an empty token logs in, even where one was configured")
	}
	if c, ok := login(creds, "admin-token-0123456789"); !ok || c.role != roleAdmin {
		t.Error("the admin token does not log in as admin")
	}
}

// FuzzReadSession: any cookie value is refused or accepted without a panic, and a
// value accepted for one token is refused for another of the same role: acceptance
// rests on the token's key. (Not "only the seed's value": under -fuzz the seeds are
// made in another process, with another nonce, and are still genuinely signed.)
func FuzzReadSession(f *testing.F) {
	cred := newCredential(roleAdmin, "admin-token-0123456789")
	other := newCredential(roleAdmin, "another-admin-token-9876543210")
	_, ck := newSession(cred, time.Now(), false)
	f.Add(ck.Value)
	f.Add("admin.1.x.y")
	f.Add("")
	f.Fuzz(func(t *testing.T, v string) {
		if (&http.Cookie{Name: cookieName, Value: v}).Valid() != nil {
			return // not a value a browser would send
		}
		_, ok := readSession(withCookie(v), []credential{cred}, time.Now())
		if _, forged := readSession(withCookie(v), []credential{other}, time.Now()); ok && forged {
			t.Fatalf("a cookie is accepted whatever the token's key: %q", v)
		}
	})
}

// TestFormsAreBounded: the login form, which anyone may post, and a session's forms
// are read no further than maxFormBytes. A token, or a CSRF token, past the bound is
// not seen: the console never buffers more of a body than a form of a few fields.
func TestFormsAreBounded(t *testing.T) {
	const token = "admin-token-0123456789"
	serve := testConsole(Config{AdminTokens: []string{token}})
	post := func(path, body string, ck *http.Cookie) int { return serve("POST", path, body, ck).Code }
	pad := "pad=" + strings.Repeat("a", maxFormBytes) + "&"
	s, ck := newSession(newCredential(roleAdmin, token), time.Now(), false)
	for _, c := range []struct {
		name, path, form string
		ck               *http.Cookie
		want             int
	}{
		{"login", "/console/login", "token=" + token, nil, http.StatusSeeOther},
		{"login past the bound", "/console/login", pad + "token=" + token, nil, http.StatusUnauthorized},
		{"a session's form", "/console/logout", "csrf=" + s.csrf(), ck, http.StatusSeeOther},
		{"a session's form past the bound", "/console/logout", pad + "csrf=" + s.csrf(), ck, http.StatusForbidden},
	} {
		if got := post(c.path, c.form, c.ck); got != c.want {
			t.Errorf("%s (%d bytes): %d, want %d", c.name, len(c.form), got, c.want)
		}
	}
}

// TestConsoleAnswers: every answer, the login page and errors too, carries the CSP
// without inline scripts, no framing and no caching (static files may be cached); a
// login behind a TLS-terminating proxy gets a Secure cookie; an id that is not a
// positive number is a 400 before any query; a form's answer opened by its address
// is a 405 page that says to use the form.
func TestConsoleAnswers(t *testing.T) {
	const token = "admin-token-0123456789"
	_, ck := newSession(newCredential(roleAdmin, token), time.Now(), false)
	console := testConsole(Config{AdminTokens: []string{token}})
	serve := func(method, path, form string, header ...string) *httptest.ResponseRecorder {
		return console(method, path, form, ck, header...)
	}
	for path, status := range map[string]int{"/console/": http.StatusSeeOther, "/console/events/0": http.StatusBadRequest,
		"/console/conversations/-1": http.StatusBadRequest, "/console/nothing-here": http.StatusNotFound,
		"/console/erasures/preview": http.StatusMethodNotAllowed} {
		w := serve("GET", path, "")
		h := w.Header()
		for _, directive := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
			if !strings.Contains(h.Get("Content-Security-Policy"), directive+";") && !strings.HasSuffix(h.Get("Content-Security-Policy"), directive) {
				t.Errorf("GET %s: Content-Security-Policy %q, want %s", path, h.Get("Content-Security-Policy"), directive)
			}
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v, want DENY, no-store and nosniff", path, h)
		}
		if w.Code != status {
			t.Errorf("GET %s = %d, want %d", path, w.Code, status)
		}
		if status == http.StatusMethodNotAllowed && !strings.Contains(w.Body.String(), "go back to the page with the form") {
			t.Errorf("GET %s of a form's answer does not say to use the form:\n%s", path, w.Body.String())
		}
	}
	if w := serve("GET", "/console/static/console.css", ""); w.Code != 200 || w.Header().Get("Cache-Control") == "no-store" {
		t.Errorf("static file: %d, Cache-Control %q; want 200, cacheable", w.Code, w.Header().Get("Cache-Control"))
	}
	for proto, secure := range map[string]bool{"": false, "https": true, "HTTPS": true, "http": false} {
		w := serve("POST", "/console/login", "token="+token, "X-Forwarded-Proto", proto)
		cookies := w.Result().Cookies()
		if len(cookies) != 1 || cookies[0].Secure != secure {
			t.Errorf("login with X-Forwarded-Proto %q: cookies %v, want one with Secure=%v", proto, cookies, secure)
		}
	}
}

// testAdminToken is the admin token of adminSession and adminConsole.
const testAdminToken = "admin-token-0123456789"

// adminSession is a session of testAdminToken's, and its cookie.
func adminSession() (session, *http.Cookie) {
	return newSession(newCredential(roleAdmin, testAdminToken), time.Now(), false)
}

// adminConsole serves requests with an admin session (as testConsole does) to a
// console configured with cfg and testAdminToken; csrf is the session's CSRF token.
func adminConsole(cfg Config) (serve func(method, path, form string) *httptest.ResponseRecorder, csrf string) {
	cfg.AdminTokens = []string{testAdminToken}
	s, ck := adminSession()
	c := testConsole(cfg)
	return func(method, path, form string) *httptest.ResponseRecorder { return c(method, path, form, ck) }, s.csrf()
}

// testConsole mounts a console configured with cfg (without a Pool: only what answers
// before a query), and serves a request to it: a form body, a cookie (nil: none), and
// headers as name, value pairs.
func testConsole(cfg Config) func(method, path, form string, ck *http.Cookie, header ...string) *httptest.ResponseRecorder {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	r := chi.NewRouter()
	r.Mount("/console", New(cfg))
	return func(method, path, form string, ck *http.Cookie, header ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if ck != nil {
			req.AddCookie(ck)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}
}

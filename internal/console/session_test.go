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
	if _, ok := login(creds, ""); ok {
		t.Error("an empty token logs in")
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
	r := chi.NewRouter()
	r.Mount("/console", New(Config{AdminTokens: []string{token}, Log: zap.NewNop()}))
	post := func(path, body string, ck *http.Cookie) int {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if ck != nil {
			req.AddCookie(ck)
		}
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
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

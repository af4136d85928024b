package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sessions are stateless, so that any inboxd process behind a load balancer accepts
// a session another made: the cookie holds the role, an expiry and a nonce, signed
// with a key derived from the token that logged in (HMAC-SHA256). Removing a token
// from the settings ends its sessions at the next restart of each process. The CSRF
// token of a session is an HMAC of the cookie's payload under the same key: only a
// page of that session can show it, and it needs no storage either.

// cookieName is the session cookie.
const cookieName = "inboxd_console"

// sessionLength is how long a session lasts from its login.
const sessionLength = 12 * time.Hour

// Roles.
const (
	roleAdmin = "admin" // sees everything, may replay
	roleRead  = "read"  // sees everything, changes nothing
)

// credential is a configured token with its role and its signing key.
type credential struct {
	role  string
	token []byte
	key   []byte
}

func newCredential(role, token string) credential {
	k := sha256.Sum256([]byte("inboxd console session\x00" + token))
	return credential{role: role, token: []byte(token), key: k[:]}
}

// session is a logged-in operator.
type session struct {
	role    string
	payload string // what the cookie signs
	key     []byte
}

func (s session) admin() bool { return s.role == roleAdmin }

// csrf is the session's CSRF token.
func (s session) csrf() string {
	return base64.RawURLEncoding.EncodeToString(mac(s.key, "csrf\x00"+s.payload))
}

// validCSRF reports whether a form carried the session's CSRF token, compared in
// constant time as the cookie's signature is.
func validCSRF(s session, got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf())) == 1
}

func mac(key []byte, s string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(s))
	return h.Sum(nil)
}

// login finds the credential whose token was typed (in constant time per token).
func login(creds []credential, typed string) (credential, bool) {
	var found credential
	ok := false
	for _, c := range creds {
		if subtle.ConstantTimeCompare(c.token, []byte(typed)) == 1 && len(typed) > 0 {
			found, ok = c, true
		}
	}
	return found, ok
}

// newSession makes a session for c and its cookie.
func newSession(c credential, now time.Time, secure bool) (session, *http.Cookie) {
	nonce := make([]byte, 12)
	_, _ = rand.Read(nonce)
	payload := fmt.Sprintf("%s.%d.%s", c.role, now.Add(sessionLength).Unix(), base64.RawURLEncoding.EncodeToString(nonce))
	value := payload + "." + base64.RawURLEncoding.EncodeToString(mac(c.key, "session\x00"+payload))
	return session{role: c.role, payload: payload, key: c.key}, sessionCookie(value, int(sessionLength.Seconds()), secure)
}

func sessionCookie(value string, maxAge int, secure bool) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: "/console", MaxAge: maxAge,
		HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode}
}

// readSession checks the request's cookie against every credential.
func readSession(r *http.Request, creds []credential, now time.Time) (session, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false
	}
	i := strings.LastIndexByte(ck.Value, '.')
	if i < 0 {
		return session{}, false
	}
	payload, sig := ck.Value[:i], ck.Value[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return session{}, false
	}
	parts := strings.Split(payload, ".")
	if len(parts) != 3 {
		return session{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() > exp {
		return session{}, false
	}
	for _, c := range creds {
		if c.role == parts[0] && hmac.Equal(got, mac(c.key, "session\x00"+payload)) {
			return session{role: c.role, payload: payload, key: c.key}, true
		}
	}
	return session{}, false
}

// secure reports whether the request came over TLS (directly, or to a proxy that says
// so), for the cookie's Secure attribute.
func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

package api

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"inboxd/internal/jsonhttp"
)

// requireToken admits requests whose bearer token is one of tokens. Every configured
// token is compared, in constant time, so timing says nothing about which one nearly
// matched. With no tokens configured the endpoints are closed, never open. Every
// answer, refusals included, says Cache-Control: no-store: what a token reads is
// contacts' messages and addresses, which no cache, a browser's included, may keep.
func requireToken(tokens []string, kind, envHint string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			got, ok := bearer(r.Header.Get("Authorization"))
			match := 0
			for _, t := range tokens {
				match |= subtle.ConstantTimeCompare([]byte(got), []byte(t))
			}
			if !ok || got == "" || match == 0 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="inboxd"`)
				jsonhttp.Error(w, http.StatusUnauthorized, "unauthorized",
					"this endpoint needs an "+kind+" token: send Authorization: Bearer <token> with a token from "+envHint)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// bearer reads the token of an "Authorization: Bearer <token>" header; the scheme's
// name is case-insensitive (RFC 9110 §11.1), so "bearer" and "BEARER" are fine.
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

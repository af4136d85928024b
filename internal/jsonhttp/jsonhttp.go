// Package jsonhttp writes inboxd's JSON responses. Every endpoint, webhook or API,
// reports errors in one shape (docs/webhooks.md, docs/api.md):
// {"error":{"code":"…","message":"…"}}.
package jsonhttp

import (
	"encoding/json"
	"net/http"
)

// Write sends v as JSON with the given status.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the status is sent; a failed write means the client left
}

// Error sends the error shape with a machine-readable code and a message that says
// what was wrong and what to do about it.
func Error(w http.ResponseWriter, status int, code, message string) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	Write(w, status, map[string]body{"error": {Code: code, Message: message}})
}

package jsonhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
)

// Problem says what is wrong with a body that encoding/json could not read into a
// shape, webhook or API request, in the sender's terms: where it is not JSON, which
// field has the wrong kind of value ("data.message_id must be a string, got a
// number") or is not taken, rather than the Go types it was read into. Errors of
// json.Unmarshal and of a json.Decoder (over an http.MaxBytesReader) alike.
func Problem(err error) string {
	var syntax *json.SyntaxError
	var kind *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF), errors.As(err, &syntax) && syntax.Offset == 0:
		return "body is empty: a JSON object is wanted"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "body is not JSON: it ends inside a value"
	case errors.As(err, &tooLarge):
		return fmt.Sprintf("body is larger than %d bytes", tooLarge.Limit)
	case errors.As(err, &syntax):
		return fmt.Sprintf("body is not JSON: %v (at byte %d)", syntax, syntax.Offset)
	case errors.As(err, &kind) && kind.Field == "":
		return "body must be a JSON object, got " + article(kind.Value)
	case errors.As(err, &kind):
		return fmt.Sprintf("%s must be %s, got %s", kind.Field, article(jsonKind(kind.Type)), article(kind.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "): // DisallowUnknownFields has no error type
		return "body has a field that is not taken here: " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "body cannot be read: " + err.Error() // a field's own reader refused its value
}

// jsonKind names the JSON value a Go type is read from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Struct, reflect.Map:
		return "object"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8,
		reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "other value"
}

// article puts "a" or "an" before a JSON kind ("an array", "a number").
func article(kind string) string {
	if kind == "" {
		return "a value"
	}
	if strings.IndexByte("aeiou", kind[0]) >= 0 {
		return "an " + kind
	}
	return "a " + kind
}

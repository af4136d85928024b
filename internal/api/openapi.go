package api

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3.1 document describing every endpoint; tests validate every
// response they see against it, so it cannot drift from the code.
//
//go:embed openapi.yaml
var OpenAPI []byte

func openapiDocument(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(OpenAPI)
}

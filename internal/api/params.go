package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
)

// queryParams holds, for each operation of the OpenAPI document ("GET
// /v1/conversations"), the query parameters it takes. The document is their one home:
// knownQuery refuses any other, so a parameter the code reads and the document leaves
// out is refused too, and the tests that use it fail.
var queryParams = mustQueryParams(OpenAPI)

// openapiParam is a parameter as the document writes it: in full, or as a $ref to
// components/parameters.
type openapiParam struct {
	Ref  string `yaml:"$ref"`
	Name string `yaml:"name"`
	In   string `yaml:"in"`
}

type openapiOperation struct {
	Parameters []openapiParam `yaml:"parameters"`
}

// mustQueryParams reads the query parameters of every operation from an OpenAPI
// document; it panics on a document it cannot read, which is a build error: the
// document is embedded.
func mustQueryParams(doc []byte) map[string][]string {
	var d struct {
		Paths      map[string]map[string]yaml.Node `yaml:"paths"`
		Components struct {
			Parameters map[string]openapiParam `yaml:"parameters"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(doc, &d); err != nil {
		panic(fmt.Sprintf("openapi.yaml: %v", err))
	}
	resolve := func(p openapiParam) openapiParam {
		if name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
			c, found := d.Components.Parameters[name]
			if !found {
				panic(fmt.Sprintf("openapi.yaml: %s names no parameter", p.Ref))
			}
			return c
		}
		return p
	}
	params := map[string][]string{}
	for path, item := range d.Paths {
		var shared []openapiParam // the path item's own parameters, for every operation
		if n, ok := item["parameters"]; ok {
			if err := n.Decode(&shared); err != nil {
				panic(fmt.Sprintf("openapi.yaml: %s parameters: %v", path, err))
			}
		}
		for method, n := range item {
			switch method {
			case "get", "post", "put", "patch", "delete":
			default:
				continue
			}
			var op openapiOperation
			if err := n.Decode(&op); err != nil {
				panic(fmt.Sprintf("openapi.yaml: %s %s: %v", method, path, err))
			}
			names := []string{}
			for _, p := range append(slices.Clone(shared), op.Parameters...) {
				if p = resolve(p); p.In == "query" {
					names = append(names, p.Name)
				}
			}
			params[strings.ToUpper(method)+" "+path] = names
		}
	}
	return params
}

// knownQuery refuses a request whose query string names a parameter its operation
// does not take, with the ones it does: a misspelt filter (?contct=) would otherwise
// be ignored, and answer with everything as if it had matched.
func knownQuery(log *zap.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := checkQuery(r); err != nil {
				respondErr(log, w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// checkQuery is knownQuery's test of one request. An operation the document does not
// describe is let through (TestQueryParamsCoverRoutes keeps every /v1 route in it).
func checkQuery(r *http.Request) error {
	rc := chi.RouteContext(r.Context())
	op := rc.RouteMethod + " " + rc.RoutePattern() // RouteMethod: a HEAD is routed, and checked, as its GET
	known, ok := queryParams[op]
	if !ok {
		return nil
	}
	var unknown, repeated []string
	for name, values := range r.URL.Query() {
		switch {
		case !slices.Contains(known, name):
			unknown = append(unknown, fmt.Sprintf("%q", clip(name)))
		case len(values) > 1:
			repeated = append(repeated, name)
		}
	}
	if len(unknown) == 0 {
		return repeatedQuery(repeated)
	}
	slices.Sort(unknown)
	if len(unknown) > 5 { // a query string of thousands of names gets a short answer
		unknown = append(unknown[:5], "…")
	}
	takes := "no query parameters"
	if len(known) > 0 {
		takes = strings.Join(known, ", ")
	}
	return badParam("unknown parameter %s; %s takes %s (GET /openapi.yaml describes each)",
		strings.Join(unknown, ", "), op, takes)
}

// repeatedQuery refuses a parameter given more than once. Every parameter takes one
// value: ?state=dead&state=pending would otherwise be read as state=dead alone, and
// answer as if the second had matched nothing.
func repeatedQuery(names []string) error {
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return badParam("%s given more than once; each parameter takes one value (for more than one, make a request for each)",
		strings.Join(names, ", "))
}

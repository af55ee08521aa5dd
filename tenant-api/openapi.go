package tenantapi

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 description of every route, written by hand
// and kept true by tests that walk the router and check every answer of the
// test suite against it.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI is the OpenAPI 3.1 document of the API (JSON), for tools.
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

// openAPI serves the document, without auth: it holds no secret.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
}

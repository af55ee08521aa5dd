package tenantapi_test

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// docURL is where the compiler finds the document; nothing is fetched.
const docURL = "mem://granary/openapi.json"

// apiDoc is the embedded OpenAPI document, parsed once, with the schemas of
// its responses compiled on first use.
type apiDoc struct {
	doc      map[string]any
	compiler *jsonschema.Compiler

	mu      sync.Mutex
	schemas map[string]*jsonschema.Schema // by JSON pointer
}

var (
	docOnce sync.Once
	theDoc  *apiDoc
	docErr  error
)

func loadDoc(t testing.TB) *apiDoc {
	t.Helper()
	docOnce.Do(func() {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(tenantapi.OpenAPI()))
		if err != nil {
			docErr = fmt.Errorf("openapi.json: %w", err)
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020) // OpenAPI 3.1's schema dialect
		c.AssertFormat()
		if err := c.AddResource(docURL, v); err != nil {
			docErr = err
			return
		}
		theDoc = &apiDoc{doc: v.(map[string]any), compiler: c, schemas: map[string]*jsonschema.Schema{}}
	})
	if docErr != nil {
		t.Fatal(docErr)
	}
	return theDoc
}

// escape is one JSON pointer token.
func escape(s string) string { return strings.NewReplacer("~", "~0", "/", "~1").Replace(s) }

// at follows a JSON pointer in the document.
func (d *apiDoc) at(ptr string) (any, bool) {
	var v any = d.doc
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		if v, ok = obj[tok]; !ok {
			return nil, false
		}
	}
	return v, true
}

// deref follows a local $ref ("#/components/…"), once.
func (d *apiDoc) deref(ptr string) (string, map[string]any, error) {
	v, ok := d.at(ptr)
	obj, _ := v.(map[string]any)
	if !ok || obj == nil {
		return "", nil, fmt.Errorf("%s is not in the document", ptr)
	}
	if ref, ok := obj["$ref"].(string); ok {
		ptr = strings.TrimPrefix(ref, "#")
		v, _ = d.at(ptr)
		if obj, _ = v.(map[string]any); obj == nil {
			return "", nil, fmt.Errorf("$ref %s does not resolve", ref)
		}
	}
	return ptr, obj, nil
}

func (d *apiDoc) schema(ptr string) (*jsonschema.Schema, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.schemas[ptr]; ok {
		return s, nil
	}
	s, err := d.compiler.Compile(docURL + "#" + ptr)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", ptr, err)
	}
	d.schemas[ptr] = s
	return s, nil
}

// responseSchema is the JSON pointer of the schema the document gives for
// an answer of pattern (a chi route pattern, which is also the OpenAPI
// path), method and status.
func (d *apiDoc) responseSchema(pattern, method string, status int) (string, error) {
	op := "/paths/" + escape(pattern) + "/" + strings.ToLower(method)
	if _, ok := d.at(op); !ok {
		return "", fmt.Errorf("%s %s is not documented", method, pattern)
	}
	ptr, resp, err := d.deref(op + "/responses/" + strconv.Itoa(status))
	if err != nil {
		return "", fmt.Errorf("%s %s: status %d is not documented", method, pattern, status)
	}
	content, _ := resp["content"].(map[string]any)
	if _, ok := content["application/json"]; !ok {
		if _, ok := content[octetStream]; ok && len(content) == 1 {
			return "", nil // a file: no schema to check it against
		}
		return "", fmt.Errorf("%s %s %d: no application/json content", method, pattern, status)
	}
	return ptr + "/content/application~1json/schema", nil
}

// octetStream is the content type of the answers that are files (an
// export's download): their body is not checked, their type is.
const octetStream = "application/octet-stream"

// errorSchema is the pointer of the {"error": …} schema, for answers that no
// route produced (404 for an unknown path, 405 for an unknown method).
const errorSchema = "/components/schemas/Error"

// undocumented reports whether a route is outside the document on purpose.
func undocumented(pattern string) bool {
	switch {
	case pattern == "/metrics": // Prometheus text, not JSON: its format is Prometheus's
		return true
	case !strings.HasPrefix(pattern, "/v1/") && pattern != "/healthz": // /ui/* and other non-API pages are HTML
		return true
	}
	return false
}

// checkResponse validates one answer against the document: its route,
// method and status must be documented and its body must match the schema.
func (d *apiDoc) checkResponse(routes chi.Routes, method, path string, status int, header http.Header, body []byte) error {
	pattern := routes.Find(chi.NewRouteContext(), method, path)
	if pattern != "" && undocumented(pattern) {
		return nil
	}
	ptr := errorSchema
	if pattern != "" {
		var err error
		if ptr, err = d.responseSchema(pattern, method, status); err != nil {
			return err
		}
	}
	if method == http.MethodHead {
		return nil
	}
	where := fmt.Sprintf("%s %s (%s) %d", method, path, pattern, status)
	if ptr == "" {
		if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err != nil || mt != octetStream {
			return fmt.Errorf("%s: content type %q, want %s", where, header.Get("Content-Type"), octetStream)
		}
		return nil
	}
	if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err != nil || mt != "application/json" {
		return fmt.Errorf("%s: content type %q, want application/json", where, header.Get("Content-Type"))
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: body is not JSON: %v", where, err)
	}
	s, err := d.schema(ptr)
	if err != nil {
		return err
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: body %s does not match %s: %v", where, clipBody(body), ptr, err)
	}
	return nil
}

func clipBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// validating is an http.RoundTripper that checks every answer a test gets
// against the OpenAPI document and fails the test on a mismatch.
type validating struct {
	t      testing.TB
	base   http.RoundTripper
	routes chi.Routes
	doc    *apiDoc
}

func (v *validating) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := v.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := v.doc.checkResponse(v.routes, req.Method, req.URL.Path, resp.StatusCode, resp.Header, body); err != nil {
		v.t.Errorf("openapi: %v", err)
	}
	if resp.StatusCode < 300 && req.GetBody != nil {
		if err := v.doc.checkRequest(v.routes, req); err != nil {
			v.t.Errorf("openapi: %v", err)
		}
	}
	return resp, nil
}

// checkRequest validates the body of a request that the API accepted
// against the document's request schema: an accepted body the document
// refuses means the document is too strict.
func (d *apiDoc) checkRequest(routes chi.Routes, req *http.Request) error {
	pattern := routes.Find(chi.NewRouteContext(), req.Method, req.URL.Path)
	if pattern == "" || undocumented(pattern) {
		return nil
	}
	r, err := req.GetBody()
	if err != nil {
		return err
	}
	body, err := io.ReadAll(r)
	if err != nil || len(body) == 0 {
		return err
	}
	where := fmt.Sprintf("%s %s (%s) request", req.Method, req.URL.Path, pattern)
	if mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); mt != "" && mt != "application/json" {
		// A file (a restore's RDB): the document must name its media type.
		if _, ok := d.at("/paths/" + escape(pattern) + "/" + strings.ToLower(req.Method) + "/requestBody/content/" + escape(mt)); !ok {
			return fmt.Errorf("%s: the API accepted a %s body the document does not describe", where, mt)
		}
		return nil
	}
	ptr := "/paths/" + escape(pattern) + "/" + strings.ToLower(req.Method) + "/requestBody/content/application~1json/schema"
	if _, ok := d.at(ptr); !ok {
		return fmt.Errorf("%s: the API accepted a body the document does not describe", where)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: accepted a body that is not JSON: %v", where, err)
	}
	s, err := d.schema(ptr)
	if err != nil {
		return err
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%s: accepted body %s does not match %s: %v", where, clipBody(body), ptr, err)
	}
	return nil
}

// TestOpenAPIRoutes: the document names exactly the routes the router
// serves, each with its methods.
func TestOpenAPIRoutes(t *testing.T) {
	h := newHarness(t, nil)
	d := loadDoc(t)
	served := map[string]bool{}
	err := chi.Walk(h.api.Handler().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if !undocumented(route) {
			served[strings.ToLower(method)+" "+route] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range d.doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			if method != "parameters" && method != "summary" && method != "description" {
				documented[method+" "+path] = true
			}
		}
	}
	var missing, extra []string
	for r := range served {
		if !documented[r] {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if !served[r] {
			extra = append(extra, r)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes the document lacks: %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("documented routes the router does not serve: %v", extra)
	}
	if len(served) < 15 {
		t.Fatalf("walked only %d routes: %v", len(served), served)
	}
}

// TestOpenAPIDocument: the document is OpenAPI 3.1 in shape (version,
// info, operations with ids and responses), every schema, request body and
// response in it compiles as JSON Schema 2020-12 with its $refs resolved,
// and it is served without auth.
func TestOpenAPIDocument(t *testing.T) {
	d := loadDoc(t)
	if d.doc["openapi"] != "3.1.0" {
		t.Fatalf("openapi %v, want 3.1.0", d.doc["openapi"])
	}
	info, _ := d.doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Fatalf("info %v: want title and version", info)
	}
	for name := range d.doc["components"].(map[string]any)["schemas"].(map[string]any) {
		if _, err := d.schema("/components/schemas/" + escape(name)); err != nil {
			t.Error(err)
		}
	}
	ids := map[string]bool{}
	for path, item := range d.doc["paths"].(map[string]any) {
		for method, o := range item.(map[string]any) {
			if !slices.Contains([]string{"get", "put", "post", "delete", "patch"}, method) {
				continue
			}
			op := o.(map[string]any)
			id, _ := op["operationId"].(string)
			if id == "" || ids[id] {
				t.Errorf("%s %s: operationId %q missing or repeated", method, path, id)
			}
			ids[id] = true
			base := "/paths/" + escape(path) + "/" + method
			if _, ok := op["requestBody"]; ok {
				if _, err := d.schema(base + "/requestBody/content/application~1json/schema"); err != nil {
					t.Error(err)
				}
			}
			resps, _ := op["responses"].(map[string]any)
			if len(resps) == 0 {
				t.Errorf("%s %s: no responses", method, path)
			}
			for code := range resps {
				ptr, err := d.responseSchema(path, method, atoi(t, code))
				if err == nil && ptr != "" {
					_, err = d.schema(ptr)
				}
				if err != nil {
					t.Error(err)
				}
			}
			for _, p := range append(paramsOf(item), paramsOf(op)...) {
				ref, _ := p.(map[string]any)["$ref"].(string)
				if _, _, err := d.deref(strings.TrimPrefix(ref, "#")); ref != "" && err != nil {
					t.Errorf("%s %s: %v", method, path, err)
				}
			}
		}
	}

	// kin-openapi checks the document against OpenAPI 3.1 itself: required
	// fields, parameters that match their paths, resolvable $refs.
	loader := openapi3.NewLoader()
	kin, err := loader.LoadFromData(tenantapi.OpenAPI())
	if err != nil {
		t.Fatalf("load as OpenAPI: %v", err)
	}
	if !kin.IsOpenAPI31OrLater() {
		t.Fatalf("kin-openapi reads version %q, want 3.1", kin.OpenAPI)
	}
	if err := kin.Validate(t.Context()); err != nil {
		t.Fatalf("not valid OpenAPI 3.1: %v", err)
	}

	h := newHarness(t, nil)
	rep := h.do("GET", "/v1/openapi.json", "", nil)
	rep.want(t, http.StatusOK)
	if !bytes.Equal(rep.body, tenantapi.OpenAPI()) {
		t.Fatal("GET /v1/openapi.json is not the embedded document")
	}
}

func paramsOf(v any) []any {
	p, _ := v.(map[string]any)["parameters"].([]any)
	return p
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("status %q is not a number", s)
	}
	return n
}

// TestOpenAPIValidatorCatches: the validator that wraps every test's
// client refuses answers that the document does not allow.
func TestOpenAPIValidatorCatches(t *testing.T) {
	h := newHarness(t, nil)
	d := loadDoc(t)
	routes := h.api.Handler().(chi.Routes)
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	for _, tc := range []struct {
		name, method, path string
		status             int
		body               string
	}{
		{"undocumented status", "GET", "/v1/dbs", http.StatusTeapot, `{"error":"x"}`},
		{"wrong shape", "GET", "/v1/dbs", http.StatusOK, `{"index":0}`},
		{"extra field", "POST", "/v1/admin/spares", http.StatusCreated, `{"addr":"h:1","x":1}`},
		{"empty error", "GET", "/v1/dbs/0", http.StatusNotFound, `{"error":""}`},
		{"unknown path, bad error", "GET", "/v1/nope", http.StatusNotFound, `{"message":"x"}`},
		{"bad audit action", "GET", "/v1/audit", http.StatusOK, `{"entries":[{"id":"1-0","time":"2026-01-01T00:00:00Z","actor":"a","action":"db.nope","target":"","tenant":"","result":"ok","request_id":""}],"next":""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.checkResponse(routes, tc.method, tc.path, tc.status, jsonHeader, []byte(tc.body)); err == nil {
				t.Fatal("validator accepted it")
			}
		})
	}
	good := `{"entries":[{"id":"1-0","time":"2026-01-01T00:00:00Z","actor":"a","action":"db.drop","target":"","tenant":"","result":"ok","request_id":""}],"next":""}`
	if err := d.checkResponse(routes, "GET", "/v1/audit", http.StatusOK, jsonHeader, []byte(good)); err != nil {
		t.Fatal(err)
	}
}

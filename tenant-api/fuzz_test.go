package tenantapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/granary-db/granary/pools"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// FuzzCreateDB posts arbitrary bodies to POST /v1/dbs of a real API over a
// real metadb with a small 64M pool: every answer is JSON with a status
// below 500, errors are {"error":"…"}, and nothing panics.
func FuzzCreateDB(f *testing.F) {
	h := newHarness(f, func(c *tenantapi.Config) {
		c.CreateWait = time.Millisecond
		c.MaxDBsPerTenant = 4
		c.MaxBodyBytes = 4 << 10
	})
	m, r := startPair(f, "2gb", 16)
	h.addPair("64M", m, r, "0-7")
	token := h.signup("fuzzer").Token
	handler := h.api.Handler()

	for _, seed := range []string{
		`{"size":"64M"}`, `{"size":"64m","write_mode":"async"}`, `{"size":"1G","write_mode":"confirmed"}`,
		`{"size":"65M"}`, `{"size":""}`, `{"size":64}`, `{"size":null}`, `{}`, `[]`, `null`, `"64M"`, ``,
		`{"size":"64M"} x`, `{"size":"64M"}{}`, `{"size":"64M","x":1}`, `{"size":`, `{"size":"\u0000"}`,
		`{"write_mode":"async","size":"32M"}`, `{"size":"64M","size":"1G"}`, "\xff\xfe", `{"size":"64M"}` + "\n\t ",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/dbs", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status: got %v, want < 500 (body %s)", rec.Code, rec.Body.Bytes())
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("body is not JSON: %q", rec.Body.Bytes())
		}
		switch {
		case rec.Code == http.StatusCreated:
			var db struct {
				Size  string `json:"size"`
				State string `json:"state"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &db); err != nil {
				t.Fatalf("201 body %s: %v", rec.Body.Bytes(), err)
			}
			if sz, err := pools.ParseSize(db.Size); err != nil || sz != pools.Size64M {
				t.Fatalf("201 for size %q: only the 64M pool has room", db.Size)
			}
		case rec.Code >= 400:
			var e map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("error body %s: %v", rec.Body.Bytes(), err)
			}
			if msg, ok := e["error"].(string); !ok || msg == "" || len(e) != 1 {
				t.Fatalf("error body: got %s, want exactly {\"error\":\"…\"}", rec.Body.Bytes())
			}
		default:
			t.Fatalf("status: got %v, want 201 or 4xx", rec.Code)
		}
	})
}

// FuzzParseSize checks the size parser the API relies on: it accepts only
// the six size classes, and what it accepts prints back to itself.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64M", "64m", " 1g ", "65M", "", "0M", "1024M", "32MB", "-64M", "64M\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sz, err := pools.ParseSize(s)
		if err != nil {
			if !errors.Is(err, pools.ErrBadSize) {
				t.Fatalf("ParseSize(%q): got %v, want ErrBadSize", s, err)
			}
			return
		}
		if !sz.Valid() {
			t.Fatalf("ParseSize(%q): got invalid size %d", s, sz)
		}
		back, err := pools.ParseSize(sz.String())
		if err != nil || back != sz {
			t.Fatalf("round trip of %q: got %v, %v; want %v", s, back, err, sz)
		}
	})
}

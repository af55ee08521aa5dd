package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestDBKeysCommand: `db keys` shows the report as tables (key names
// quoted), `--scan` POSTs and polls until the scan is done, and -o json
// prints the answer as it came.
func TestDBKeysCommand(t *testing.T) {
	isolate(t)
	const done = `{"index":2,"state":"done","requested":"2026-12-04T18:00:00Z","scanned":3,"error":"",` +
		`"big_keys":{"started":"2026-12-04T18:00:00Z","finished":"2026-12-04T18:00:01Z","elapsed_ms":1200,"complete":true,"partial":"",` +
		`"keys":3,"scanned":3,"slot":{"pair":"p1","db":4},"by_bytes":[{"key":"big\tone","type":"string","bytes":300000,"elements":299000}],` +
		`"by_elements":[{"key":"list","type":"list","bytes":2000,"elements":900}]},` +
		`"hot_keys":{"time":"2026-12-04T18:00:05Z","proxies":2,"sample_every":16,"window_seconds":60,"keys":[{"key":"hot:a","ops_per_sec":1234.5,"error":3}]}}`
	const pending = `{"index":2,"state":"pending","requested":"2026-12-04T18:00:00Z","scanned":0,"error":"","big_keys":null,` +
		`"hot_keys":{"time":null,"proxies":0,"sample_every":0,"window_seconds":0,"keys":[]}}`
	var mu sync.Mutex
	var calls []string
	gets := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusAccepted)
			w.Write([]byte(pending))
			return
		}
		gets++
		if gets == 2 { // the first poll after the POST: still running
			w.Write([]byte(strings.Replace(pending, `"pending"`, `"running"`, 1)))
			return
		}
		w.Write([]byte(done))
	}))
	defer srv.Close()

	code, out, errs := run(t, "db", "keys", "2", "--api", srv.URL, "--token", "tk")
	if code != 0 || !strings.Contains(out, `"big\tone"`) || !strings.Contains(out, "hot:a") || !strings.Contains(out, "1234.5") ||
		!strings.Contains(out, "by elements") || !strings.Contains(out, "complete") {
		t.Fatalf("db keys: %d %q\n%s", code, errs, out)
	}
	mu.Lock()
	calls = nil
	mu.Unlock()
	code, out, errs = run(t, "db", "keys", "2", "--scan", "-o", "json", "--api", srv.URL, "--token", "tk")
	mu.Lock()
	defer mu.Unlock()
	if code != 0 || len(calls) != 3 || calls[0] != "POST /v1/dbs/2/keys/report" || calls[2] != "GET /v1/dbs/2/keys/report" {
		t.Fatalf("db keys --scan: %d %q, calls %v", code, errs, calls)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil || v["state"] != "done" {
		t.Fatalf("-o json: %v %s", err, out)
	}
}

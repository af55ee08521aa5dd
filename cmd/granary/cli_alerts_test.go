package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// TestAlertCommands: set-alerts PUTs the thresholds and the secret from the
// named variable (never from a flag), alerts shows the rule and history.
func TestAlertCommands(t *testing.T) {
	isolate(t)
	var mu sync.Mutex
	var got map[string]any
	var method, path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		method, path = r.Method, r.URL.Path
		got = nil
		_ = json.Unmarshal(b, &got)
		mu.Unlock()
		w.Write([]byte(`{"webhook":"https://h.example/x?redacted","secret_set":true,"used_pct":80,"ops_per_sec":0,"repl_lag_bytes":0,` +
			`"alerts":[{"id":"7","metric":"used_pct","value":91,"threshold":80,"time":"2026-12-04T18:00:00Z","state":"failed","attempts":6,"last_error":"delivery failed: HTTP 500"}]}`))
	}))
	defer srv.Close()
	t.Setenv("HOOK_SECRET", "s3cret")
	code, out, errs := run(t, "db", "set-alerts", "2", "--webhook", "https://h.example/x?t=1", "--used-pct", "80", "--secret-env", "HOOK_SECRET", "--api", srv.URL, "--token", "tk")
	mu.Lock()
	if code != 0 || method != http.MethodPut || path != "/v1/dbs/2/alerts" || got["secret"] != "s3cret" || got["used_pct"] != 80.0 || got["webhook"] != "https://h.example/x?t=1" {
		t.Fatalf("set-alerts: %d %s %s %v %s", code, method, path, got, errs)
	}
	mu.Unlock()
	if strings.Contains(out, "s3cret") || !strings.Contains(out, "delivery failed: HTTP 500") {
		t.Fatalf("set-alerts output:\n%s", out)
	}
	code, _, _ = run(t, "db", "set-alerts", "2", "--webhook", "https://h.example/", "--api", srv.URL, "--token", "tk")
	mu.Lock()
	if _, sent := got["secret"]; code != 0 || sent {
		t.Fatalf("without --secret-env the secret is not sent (the stored one stays): %v", got)
	}
	mu.Unlock()
	code, out, _ = run(t, "db", "alerts", "2", "--api", srv.URL, "--token", "tk")
	mu.Lock()
	defer mu.Unlock()
	if code != 0 || method != http.MethodGet || !strings.Contains(out, "used_pct") {
		t.Fatalf("alerts: %d\n%s", code, out)
	}
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportCommands: each export command sends its call; a download
// writes the file only when its SHA-256 is the one the API sent, and
// db export --out waits for the job, then downloads.
func TestExportCommands(t *testing.T) {
	isolate(t)
	file := []byte("REDIS0011 not really, but bytes")
	sum := sha256.Sum256(file)
	goodSum := hex.EncodeToString(sum[:])
	sendSum := goodSum
	var calls []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, r.Method+" "+r.URL.Path)
		switch {
		case r.Method == "POST" && r.URL.Path == "/v1/dbs/3/exports":
			w.WriteHeader(202)
			w.Write([]byte(`{"job":"j1","id":"j1","kind":"export","state":"running","step":"dump","progress":0}`))
		case r.URL.Path == "/v1/jobs/j1":
			w.Write([]byte(`{"id":"j1","kind":"export","state":"done","step":"done","progress":1,"bytes_copied":31,"export":{"keys_copied":2,"keys_total":2,"download":"/v1/exports/j1"}}`))
		case r.Method == "GET" && r.URL.Path == "/v1/exports":
			w.Write([]byte(`[{"id":"j1","index":3,"state":"done","progress":1,"created":"2026-01-01T00:00:00Z","updated":"x","bytes":31,"keys":2,"sha256":"` + goodSum + `","download":"/v1/exports/j1"}]`))
		case r.Method == "GET" && r.URL.Path == "/v1/exports/j1":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("X-Checksum-SHA256", sendSum)
			w.Write(file)
		case r.Method == "DELETE" && r.URL.Path == "/v1/exports/j1":
			w.Write([]byte(`{"id":"j1","index":3,"state":"done","progress":1,"created":"x","updated":"x","bytes":31,"keys":2,"download":"/v1/exports/j1"}`))
		default:
			w.WriteHeader(404)
			w.Write([]byte(`{"error":"no such thing"}`))
		}
	}))
	defer srv.Close()
	cli := func(args ...string) (int, string, string) {
		return run(t, append(args, "--api", srv.URL, "--token", "t")...)
	}
	dir := t.TempDir()

	code, out, errs := cli("db", "export", "3")
	if code != 0 || !strings.Contains(out, "granary job watch j1") || calls[len(calls)-1] != "POST /v1/dbs/3/exports" {
		t.Fatalf("db export: %d %q %q %v", code, out, errs, calls)
	}
	code, out, _ = cli("export", "list")
	if code != 0 || !strings.Contains(out, "SHA256") || !strings.Contains(out, goodSum) {
		t.Fatalf("export list: %d %q", code, out)
	}
	code, out, _ = cli("export", "list", "-o", "json")
	if code != 0 || !strings.HasPrefix(strings.TrimSpace(out), "[") {
		t.Fatalf("export list -o json: %d %q", code, out)
	}
	path := filepath.Join(dir, "a.rdb")
	code, out, errs = cli("db", "export", "3", "--out", path)
	if got, _ := os.ReadFile(path); code != 0 || string(got) != string(file) || !strings.Contains(out, goodSum) {
		t.Fatalf("db export --out: %d %q %q, file %q", code, out, errs, got)
	}
	sendSum = strings.Repeat("0", 64)
	bad := filepath.Join(dir, "b.rdb")
	code, _, errs = cli("export", "download", "j1", "--out", bad)
	if _, err := os.Stat(bad); code != 1 || !strings.Contains(errs, "checksum mismatch") || err == nil {
		t.Fatalf("download with a bad checksum: exit %d %q, file: %v", code, errs, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("files left: %v", ents)
	}
	code, _, errs = cli("export", "download", "nope", "--out", bad)
	if code != 1 || !strings.Contains(errs, "no such thing") {
		t.Fatalf("download of no export: %d %q", code, errs)
	}
	code, _, _ = cli("export", "download", "j1")
	if code != 2 {
		t.Fatalf("download without --out: exit %d, want 2", code)
	}
	code, out, _ = cli("export", "delete", "j1")
	if code != 0 || !strings.Contains(out, "export j1 deleted") || calls[len(calls)-1] != "DELETE /v1/exports/j1" {
		t.Fatalf("export delete: %d %q", code, out)
	}
}

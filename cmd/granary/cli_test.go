package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

// isolate keeps a test away from the machine's profile, cluster.json and
// GRANARY_* variables.
func isolate(t *testing.T) string {
	t.Helper()
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", t.TempDir())
	for _, v := range []string{"GRANARY_API", "GRANARY_TOKEN", "GRANARY_DEV_DIR"} {
		t.Setenv(v, "")
	}
	t.Chdir(t.TempDir())
	return cfg
}

// run runs the CLI in-process, stdout not a terminal.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = execCLI(t.Context(), args, &out, &errb, false)
	return code, out.String(), errb.String()
}

func TestResolveEndpoint(t *testing.T) {
	prof := profile{API: "http://prof:1", Token: "prof-tenant", AdminToken: "prof-admin"}
	dev := &clusterInfo{API: "http://dev:2", AdminToken: "dev-admin", Demo: demoInfo{Token: "dev-demo"}}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	noEnv := env(nil)
	tests := []struct {
		name             string
		flagAPI, flagTok string
		admin            bool
		getenv           func(string) string
		prof             profile
		dev              *clusterInfo
		want             endpoint
	}{
		{"nothing", "", "", false, noEnv, profile{}, nil, endpoint{}},
		{"cluster.json tenant", "", "", false, noEnv, profile{}, dev, endpoint{"http://dev:2", "dev-demo"}},
		{"cluster.json admin", "", "", true, noEnv, profile{}, dev, endpoint{"http://dev:2", "dev-admin"}},
		{"profile over cluster.json", "", "", false, noEnv, prof, dev, endpoint{"http://prof:1", "prof-tenant"}},
		{"profile admin", "", "", true, noEnv, prof, dev, endpoint{"http://prof:1", "prof-admin"}},
		{"profile without admin token: none", "", "", true, noEnv, profile{API: "http://prof:1", Token: "t"}, dev, endpoint{"http://prof:1", ""}},
		{"env over profile", "", "", false, env(map[string]string{"GRANARY_API": "http://env:3", "GRANARY_TOKEN": "env-tok"}), prof, dev,
			endpoint{"http://env:3", "env-tok"}},
		{"env api: files' tokens are not sent there", "", "", false, env(map[string]string{"GRANARY_API": "http://env:3"}), prof, dev,
			endpoint{"http://env:3", ""}},
		{"env api equal to cluster.json's", "", "", false, env(map[string]string{"GRANARY_API": "http://dev:2/"}), prof, dev,
			endpoint{"http://dev:2", "dev-demo"}},
		{"flags over env", "http://flag:4", "flag-tok", false, env(map[string]string{"GRANARY_API": "http://env:3", "GRANARY_TOKEN": "env-tok"}), prof, dev,
			endpoint{"http://flag:4", "flag-tok"}},
		{"flag token, profile api", "", "flag-tok", true, noEnv, prof, dev, endpoint{"http://prof:1", "flag-tok"}},
		// A cluster.json is found by the working folder: the user's own
		// token is never sent to the API it names.
		{"env token, no api but a cluster's", "", "", false, env(map[string]string{"GRANARY_TOKEN": "env-tok"}), profile{}, dev, endpoint{"", "env-tok"}},
		{"flag token, no api but a cluster's", "", "flag-tok", true, noEnv, profile{}, dev, endpoint{"", "flag-tok"}},
		{"bare host:port", "127.0.0.1:8080", "", false, noEnv, profile{}, nil, endpoint{"http://127.0.0.1:8080", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := resolveEndpoint(tc.flagAPI, tc.flagTok, tc.admin, tc.getenv, tc.prof, tc.dev); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestConfigFiles: login writes the profile 0600 in a 0700 folder; the
// profile beats cluster.json; GRANARY_DEV_DIR's cluster.json beats ./.dev.
func TestConfigFiles(t *testing.T) {
	cfg := isolate(t)
	var mu sync.Mutex
	seen := map[string]string{} // server -> token it got
	server := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name] = r.Header.Get("Authorization")
			mu.Unlock()
			w.Write([]byte("[]"))
		}))
		t.Cleanup(s.Close)
		return s
	}
	local, envDev, logged := server("local"), server("envdev"), server("logged")
	writeCluster := func(dir, api, token string) {
		os.MkdirAll(dir, 0o700)
		b, _ := json.Marshal(clusterInfo{API: api, AdminToken: "adm-" + token, Demo: demoInfo{Token: token}})
		if err := os.WriteFile(filepath.Join(dir, "cluster.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCluster(".dev", local.URL, "local-demo")
	check := func(server, token string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if seen[server] != "Bearer "+token {
			t.Fatalf("server %s got %q, want token %s (seen %v)", server, seen[server], token, seen)
		}
		clear(seen)
	}
	if code, _, errs := run(t, "db", "list"); code != 0 {
		t.Fatalf("db list: %d %s", code, errs)
	}
	check("local", "local-demo")
	if code, _, errs := run(t, "admin", "jobs"); code != 0 {
		t.Fatalf("admin jobs: %d %s", code, errs)
	}
	check("local", "adm-local-demo")

	dir := t.TempDir()
	writeCluster(dir, envDev.URL, "env-demo")
	t.Setenv("GRANARY_DEV_DIR", dir)
	run(t, "db", "list")
	check("envdev", "env-demo")

	code, _, errs := run(t, "login", "--api", logged.URL, "--token", "mine")
	if code != 0 {
		t.Fatalf("login: %d %s", code, errs)
	}
	path := filepath.Join(cfg, "granary", "profile.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("profile mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Fatalf("profile folder mode %v, want 0700", di.Mode().Perm())
	}
	run(t, "db", "list")
	check("logged", "mine")
	// An admin token joins the same profile; the tenant token stays.
	if code, _, errs := run(t, "login", "--api", logged.URL, "--token", "boss", "--admin"); code != 0 {
		t.Fatalf("login --admin: %d %s", code, errs)
	}
	run(t, "admin", "jobs")
	check("logged", "boss")
	run(t, "db", "list")
	check("logged", "mine")
	// The environment beats the profile, the flags beat both.
	t.Setenv("GRANARY_TOKEN", "from-env")
	run(t, "db", "list")
	check("logged", "from-env")
	run(t, "db", "list", "--token", "from-flag", "--api", local.URL)
	check("local", "from-flag")
}

// TestSignupSave: signup shows the secrets, and saves the token only with
// --save.
func TestSignupSave(t *testing.T) {
	cfg := isolate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/tenants" || r.Header.Get("Authorization") != "" {
			http.Error(w, `{"error":"unexpected"}`, 400)
			return
		}
		var req struct{ Name string }
		json.NewDecoder(r.Body).Decode(&req)
		w.WriteHeader(201)
		w.Write([]byte(`{"tenant":"` + req.Name + `","token":"gt_x","user":"` + req.Name + `","password":"pw"}`))
	}))
	defer srv.Close()
	path := filepath.Join(cfg, "granary", "profile.json")
	code, out, errs := run(t, "signup", "acme", "--api", srv.URL)
	if code != 0 || !strings.Contains(out, "password:  pw") || !strings.Contains(out, "token:     gt_x") {
		t.Fatalf("signup: %d %q %q", code, out, errs)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("signup without --save wrote the profile: %v", err)
	}
	if code, _, errs := run(t, "signup", "acme", "--api", srv.URL, "--save", "-o", "json"); code != 0 {
		t.Fatalf("signup --save: %d %s", code, errs)
	}
	b, _ := os.ReadFile(path)
	var p profile
	if err := json.Unmarshal(b, &p); err != nil || p.API != srv.URL || p.Token != "gt_x" {
		t.Fatalf("profile %s: %+v %v", b, p, err)
	}
}

const dbsJSON = `[{"index":0,"size":"64M","state":"active","write_mode":"confirmed","used_bytes":1500000,"quota_bytes":67108864,` +
	`"banned":false,"endpoint":"127.0.0.1:7379","url":"redis://acme@127.0.0.1:7379/0","slot":{"pair":"p1","db":3},"created":"2026-12-04T18:00:00Z"}]`

// TestTableAndJSON: a table by default, the API's JSON with -o json.
func TestTableAndJSON(t *testing.T) {
	isolate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(dbsJSON))
	}))
	defer srv.Close()
	code, out, _ := run(t, "db", "list", "--api", srv.URL)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "INDEX SIZE STATE WRITE MODE USED QUOTA URL" ||
		strings.Join(strings.Fields(lines[1]), " ") != "0 64M active confirmed 1.4 MB 64.0 MB redis://acme@127.0.0.1:7379/0" {
		t.Fatalf("table: %d\n%s", code, out)
	}
	code, out, _ = run(t, "db", "list", "--api", srv.URL, "-o", "json")
	var got, want any
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
		t.Fatalf("json: %d %v\n%s", code, err, out)
	}
	json.Unmarshal([]byte(dbsJSON), &want)
	if g, _ := json.Marshal(got); string(g) != mustCompact(dbsJSON) {
		t.Fatalf("json: got %s, want %s", g, dbsJSON)
	}
}

func mustCompact(s string) string {
	var v any
	json.Unmarshal([]byte(s), &v)
	b, _ := json.Marshal(v)
	return string(b)
}

// TestExitCodes: usage errors exit 2, failures 1, each with one line on
// stderr; nothing is printed on stdout.
func TestExitCodes(t *testing.T) {
	isolate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"bad or missing token: send Authorization: Bearer <token>"}` + "\n"))
			return
		}
		w.Write([]byte(dbsJSON))
	}))
	defer srv.Close()
	api := "--api=" + srv.URL
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // a part of the one line
	}{
		{"ok", []string{"db", "list", api, "--token", "good"}, 0, ""},
		{"unknown command", []string{"dbs", api}, 2, `unknown command "dbs"`},
		{"unknown subcommand", []string{"db", "lst", api}, 2, `unknown command "lst"`},
		{"bad flag", []string{"db", "create", "--sise", "64M", api}, 2, "unknown flag: --sise"},
		{"missing flag", []string{"db", "create", api}, 2, `required flag(s) "size" not set`},
		{"missing argument", []string{"db", "show", api}, 2, "accepts 1 arg(s), received 0"},
		{"bad index", []string{"db", "show", "x", api}, 2, `bad db index "x"`},
		{"bad output", []string{"db", "list", "-o", "yaml", api}, 2, `bad -o "yaml"`},
		{"no api", []string{"db", "list"}, 2, "no API address"},
		{"wrong token", []string{"db", "list", api, "--token", "bad"}, 1, "granary: bad or missing token: send Authorization: Bearer <token>"},
		{"no server", []string{"db", "list", "--api", "http://127.0.0.1:1"}, 1, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, errs)
			}
			if tc.code == 0 {
				return
			}
			if out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "granary: ") || !strings.Contains(errs, tc.stderr) {
				t.Fatalf("stdout %q stderr %q, want one line with %q", out, errs, tc.stderr)
			}
			if tc.code == 2 && !strings.Contains(errs, "--help") {
				t.Fatalf("stderr %q: no hint to --help", errs)
			}
		})
	}
}

// scriptedJob serves GET /v1/jobs/{id} (or, with admin set, GET
// /v1/admin/jobs/{id}) for token "t": the k-th poll gets
// script[k]; past the script, the last entry again until finish is set,
// then final. It records every request's method and path.
type scriptedJob struct {
	mu       sync.Mutex
	script   []jobInfo
	final    jobInfo
	finish   bool
	polls    int
	requests []string
	// unavailable polls answer 503 and leave the script where it is.
	unavailable map[int]bool
	admin       bool
}

func (s *scriptedJob) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
	if r.Header.Get("Authorization") != "Bearer t" {
		w.WriteHeader(401)
		w.Write([]byte(`{"error":"bad token"}`))
		return
	}
	path := "/v1/jobs/" + s.final.ID
	if s.admin {
		path = "/v1/admin/jobs/" + s.final.ID
	}
	if r.Method != "GET" || r.URL.Path != path {
		w.WriteHeader(404)
		w.Write([]byte(`{"error":"no job"}`))
		return
	}
	if s.unavailable[len(s.requests)] {
		w.WriteHeader(503)
		w.Write([]byte(`{"error":"metadb does not answer"}`))
		return
	}
	j := s.final
	switch {
	case s.polls < len(s.script):
		j = s.script[s.polls]
	case !s.finish:
		j = s.script[len(s.script)-1]
	}
	s.polls++
	json.NewEncoder(w).Encode(j)
}

func (s *scriptedJob) setFinish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finish = true
}

// resizeScript walks a resize job through its steps: reserve, copy with
// the bytes growing (repeats polls each), then the rest.
func resizeScript(id string, repeats int) []jobInfo {
	const total = 22 << 20
	at := func(step metadb.Step, frac float64) jobInfo {
		j := jobInfo{ID: id, Kind: metadb.JobResize, State: metadb.JobRunning, Step: step,
			Progress: metadb.Progress(metadb.JobResize, step, frac), Tenant: "acme", BytesTotal: total}
		if step == metadb.StepReserve {
			j.BytesTotal = 0
		} else {
			j.BytesCopied = int64(min(frac, 1) * total)
			if step != metadb.StepCopy {
				j.BytesCopied = total
			}
		}
		return j
	}
	var out []jobInfo
	for i := 0; i < repeats; i++ {
		out = append(out, at(metadb.StepReserve, 0))
	}
	for i := 0; i < 5*repeats; i++ {
		out = append(out, at(metadb.StepCopy, float64(i)/float64(5*repeats)))
	}
	for _, s := range metadb.Steps(metadb.JobResize)[2:] {
		for i := 0; i < repeats; i++ {
			out = append(out, at(s.Name, 0))
		}
	}
	return out
}

// TestWatchLines: off a terminal, job watch prints one line per step and
// "done"; a failed job exits 1 with its error.
func TestWatchLines(t *testing.T) {
	isolate(t)
	watchPoll = time.Millisecond
	t.Cleanup(func() { watchPoll = 200 * time.Millisecond })
	const id = "j1-abc"
	done := jobInfo{ID: id, Kind: metadb.JobResize, State: metadb.JobDone, Step: metadb.StepDone, Progress: 1,
		BytesCopied: 22 << 20, BytesTotal: 22 << 20}
	srv := &scriptedJob{script: resizeScript(id, 2), final: done, finish: true}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	code, out, errs := run(t, "job", "watch", id, "--api", hs.URL, "--token", "t")
	want := "step reserve 0%\n" +
		"step copy 14% 0 B/22.0 MB\n" +
		"step hold 28% 22.0 MB/22.0 MB\n" +
		"step catchup 42% 22.0 MB/22.0 MB\n" +
		"step switch 57% 22.0 MB/22.0 MB\n" +
		"step flush_old 71% 22.0 MB/22.0 MB\n" +
		"step free_old 85% 22.0 MB/22.0 MB\n" +
		"done\n"
	if code != 0 || out != want || errs != "" {
		t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", code, errs, out, want)
	}
	for _, r := range srv.requests {
		if r != "GET /v1/jobs/"+id {
			t.Fatalf("watch sent %s", r)
		}
	}

	// --admin watches through the admin's route, which shows any job.
	asrv := &scriptedJob{script: resizeScript(id, 2), final: done, finish: true, admin: true}
	ahs := httptest.NewServer(asrv)
	defer ahs.Close()
	if code, aout, errs := run(t, "job", "watch", "--admin", id, "--api", ahs.URL, "--token", "t"); code != 0 || aout != want || errs != "" {
		t.Fatalf("--admin: exit %d, stderr %q, stdout:\n%s", code, errs, aout)
	}
	for _, r := range asrv.requests {
		if r != "GET /v1/admin/jobs/"+id {
			t.Fatalf("watch --admin sent %s", r)
		}
	}

	// The API failing for a moment (5xx) does not end the watching.
	srv.polls, srv.requests, srv.unavailable = 0, nil, map[int]bool{3: true, 4: true, 6: true}
	code, out2, errs := run(t, "job", "watch", id, "--api", hs.URL, "--token", "t")
	if code != 0 || out2 != want || errs != strings.Repeat("granary: metadb does not answer (retrying)\n", 2) { // once per outage
		t.Fatalf("with 503s: exit %d, stderr %q, stdout:\n%s", code, errs, out2)
	}
	srv.unavailable = nil

	// -o json: only the job as it ended.
	srv.polls = 0
	code, out, _ = run(t, "job", "watch", id, "--api", hs.URL, "--token", "t", "-o", "json")
	var got jobInfo
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got != done {
		t.Fatalf("-o json: exit %d %v: %s", code, err, out)
	}

	failed := done
	failed.State, failed.Step, failed.Error = metadb.JobFailed, metadb.StepCopy, "target slot lost"
	fsrv := &scriptedJob{script: resizeScript(id, 1)[:3], final: failed, finish: true}
	fhs := httptest.NewServer(fsrv)
	defer fhs.Close()
	code, out, errs = run(t, "job", "watch", id, "--api", fhs.URL, "--token", "t")
	if code != 1 || !strings.HasSuffix(out, "failed at copy: target slot lost\n") || errs != "granary: job "+id+" failed: target slot lost\n" {
		t.Fatalf("failed job: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// A job that is not the caller's: the API's 404, exit 1.
	code, _, errs = run(t, "job", "watch", "nope", "--api", hs.URL, "--token", "t")
	if code != 1 || errs != "granary: no job\n" {
		t.Fatalf("unknown job: exit %d, stderr %q", code, errs)
	}
}

// TestAuditContract: admin audit and audit speak the audit routes'
// contract: filters as query parameters, entries and a next cursor.
func TestAuditContract(t *testing.T) {
	isolate(t)
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization")+" "+r.URL.Path+"?"+r.URL.RawQuery)
		mu.Unlock()
		w.Write([]byte(`{"entries":[{"id":"a1","time":"2026-12-04T18:00:00Z","actor":"tenant:acme","action":"db.create",` +
			`"target":"db/0","tenant":"acme","result":"ok","request_id":"r-1"}],"next":"c2"}`))
	}))
	defer srv.Close()
	code, out, errs := run(t, "admin", "audit", "--api", srv.URL, "--token", "adm", "--tenant", "acme", "--action", "db.create", "--limit", "5")
	if code != 0 || !strings.Contains(out, "db.create") || !strings.Contains(out, "REQUEST") || errs != "more: add --cursor c2\n" {
		t.Fatalf("admin audit: %d %q %q", code, out, errs)
	}
	code, out, _ = run(t, "audit", "--api", srv.URL, "--token", "ten", "--cursor", "c2", "-o", "json")
	var page auditPage
	if err := json.Unmarshal([]byte(out), &page); code != 0 || err != nil || page.Next != "c2" || page.Entries[0].RequestID != "r-1" {
		t.Fatalf("audit -o json: %d %v %s", code, err, out)
	}
	want := []string{"Bearer adm /v1/admin/audit?action=db.create&limit=5&tenant=acme", "Bearer ten /v1/audit?cursor=c2"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if code, _, errs := run(t, "audit", "--tenant", "x", "--api", srv.URL); code != 2 {
		t.Fatalf("tenant audit with --tenant: %d %q, want 2", code, errs)
	}
}

func TestHumanBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KB"}, {3_355_443, "3.2 MB"}, {64 << 20, "64.0 MB"}, {1 << 30, "1.0 GB"},
	} {
		if got := humanBytes(tc.n); got != tc.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

// TestServerCommandsPassThrough: the server subcommands get their
// arguments untouched, -h included, and parse them with their FlagSet.
func TestServerCommandsPassThrough(t *testing.T) {
	for _, name := range []string{"master", "proxy", "keeper", "api", "dev"} {
		if code, out, errs := run(t, name, "-h"); code != 0 || out != "" || errs != "" {
			t.Fatalf("granary %s -h: exit %d, stdout %q, stderr %q; want 0 and the FlagSet's usage on os.Stderr", name, code, out, errs)
		}
	}
	code, out, _ := run(t, "--help")
	for _, name := range []string{"master", "proxy", "keeper", "api", "dev", "signup", "db", "job", "admin", "login"} {
		if code != 0 || !strings.Contains(out, "\n  "+name+" ") {
			t.Fatalf("granary --help: exit %d, no %s in:\n%s", code, name, out)
		}
	}
}

// TestRequests: each command sends the call of the REST API's contract.
func TestRequests(t *testing.T) {
	isolate(t)
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body bytes.Buffer
		body.ReadFrom(r.Body)
		got = strings.TrimSpace(r.Header.Get("Authorization") + " " + r.Method + " " + r.URL.Path + " " + strings.TrimSpace(body.String()))
		switch {
		case r.Method == "DELETE" || (r.Method == "PATCH" && strings.Contains(body.String(), "size")) || strings.Contains(r.URL.Path, "/imports") || strings.HasSuffix(r.URL.Path, "/restore"):
			w.WriteHeader(202)
			w.Write([]byte(`{"job":"j1"}`))
		case strings.HasPrefix(r.URL.Path, "/v1/admin/spares"):
			w.WriteHeader(201)
			w.Write([]byte(`{"addr":"127.0.0.1:7000"}`))
		default:
			w.WriteHeader(201)
			w.Write([]byte(`{}`))
		}
	}))
	defer srv.Close()
	rdbPath := filepath.Join(t.TempDir(), "dump.rdb")
	if err := os.WriteFile(rdbPath, []byte("REDIS0011-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		want string
		out  string
	}{
		{[]string{"db", "create", "--size", "64M"}, `Bearer t POST /v1/dbs {"size":"64M"}`, "index:"},
		{[]string{"db", "create", "--size", "1g", "--write-mode", "async"}, `Bearer t POST /v1/dbs {"size":"1g","write_mode":"async"}`, ""},
		{[]string{"db", "show", "007"}, `Bearer t GET /v1/dbs/7`, ""},
		{[]string{"db", "set-mode", "3", "async"}, `Bearer t PATCH /v1/dbs/3 {"write_mode":"async"}`, ""},
		{[]string{"db", "resize", "3", "--size", "256M"}, `Bearer t PATCH /v1/dbs/3 {"size":"256M"}`, "granary job watch j1"},
		{[]string{"db", "drop", "3"}, `Bearer t DELETE /v1/dbs/3`, "granary job watch j1"},
		{[]string{"db", "import", "3", "--source", "redis://h:1", "--db", "2"}, `Bearer t POST /v1/dbs/3/imports {"db":2,"source":"redis://h:1"}`, "granary job watch j1"},
		{[]string{"db", "import", "cutover", "3", "j1"}, `Bearer t POST /v1/dbs/3/imports/j1/cutover`, "granary job watch j1"},
		{[]string{"db", "import", "cancel", "3", "j1"}, `Bearer t DELETE /v1/dbs/3/imports/j1`, "granary job watch j1"},
		{[]string{"db", "restore", "3", "--export", "j0"}, `Bearer t POST /v1/dbs/3/restore {"export":"j0"}`, "granary job watch j1"},
		{[]string{"db", "restore", "3", "--file", rdbPath}, `Bearer t POST /v1/dbs/3/restore REDIS0011-file`, "granary job watch j1"},
		{[]string{"admin", "pairs", "add", "--size", "64M", "--master", "h1:1", "--replica", "h2:2", "--dbs", "0-15"},
			`Bearer t POST /v1/admin/pools/64M/pairs {"dbs":"0-15","master":"h1:1","replica":"h2:2"}`, "dbs:"},
		{[]string{"admin", "pairs", "add", "--size", "64M", "--master", "h1:1", "--replica", "h2:2", "--dbs", "0-15", "--persistence", "aof-always"},
			`Bearer t POST /v1/admin/pools/64M/pairs {"dbs":"0-15","master":"h1:1","persistence":"aof-always","replica":"h2:2"}`, "dbs:"},
		{[]string{"admin", "spares", "add", "127.0.0.1:7000"}, `Bearer t POST /v1/admin/spares {"addr":"127.0.0.1:7000"}`, "spare 127.0.0.1:7000 added"},
	}
	for _, tc := range tests {
		got = ""
		code, out, errs := run(t, append(tc.args, "--api", srv.URL, "--token", "t")...)
		if code != 0 || got != tc.want || !strings.Contains(out, tc.out) {
			t.Fatalf("granary %v: exit %d %q, sent %q, want %q; stdout %q", tc.args, code, errs, got, tc.want, out)
		}
	}
}

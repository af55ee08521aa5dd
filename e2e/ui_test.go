package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// chromiumPath finds the browser the dashboard test drives: $GRANARY_CHROMIUM,
// else Debian's chromium on the PATH. scripts/deps.sh (make deps-browser, run by make test) installs
// it; the test installs nothing and fails, never skips, without it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRANARY_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium on the PATH: run `make deps-browser` (scripts/deps.sh installs Debian's chromium package) " +
		"or set GRANARY_CHROMIUM to a Chromium binary")
	return ""
}

// browser starts a headless Chromium at 1280×800 that ends with the test.
// Uncaught exceptions and CSP refusals on its pages are collected: the test
// fails on any.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	bin := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(bin), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 800))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium %s: %v (`make deps-browser` installs Debian's chromium)", bin, err)
	}
	var (
		mu   sync.Mutex
		bad  []string
		done = make(chan struct{})
	)
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), bad...)
	}
}

// do runs browser steps, failing the test with what was being done.
func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// until waits for a JavaScript condition on the page.
func until(t *testing.T, ctx context.Context, what string, d time.Duration, js string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func evalJS[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

func uiLogin(t *testing.T, ctx context.Context, token, view string) {
	t.Helper()
	do(t, ctx, "log in for the "+view+" view",
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login-btn")),
		chromedp.WaitVisible(chromedp.ID(view)))
}

func uiLogout(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, "log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login")))
	if left := evalJS[int](t, ctx, `sessionStorage.length + localStorage.length + document.cookie.length`); left != 0 {
		t.Fatalf("after log out the browser still keeps %d bytes/items of session state", left)
	}
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	if os.Getenv("GRANARY_UI_SCREENSHOTS") == "" {
		return
	}
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join("..", "docs", name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// TestDashboard drives the dashboard of a real `granary dev` in a real
// headless Chromium: the admin sees pools, pairs, proxies, keepers and jobs;
// the demo tenant creates a db when it has none, resizes it from the page
// and sees the job through to done and the new size. GRANARY_UI_SCREENSHOTS=1
// saves both views to docs/.
func TestDashboard(t *testing.T) {
	ctx, problems := browser(t) // first: without a browser, fail before starting a cluster
	_, c, _ := startDev(t)

	do(t, ctx, "open /ui", chromedp.Navigate(c.API+"/ui"), chromedp.WaitVisible(chromedp.ID("login")))
	if loc := evalJS[string](t, ctx, `location.pathname`); loc != "/ui/" {
		t.Fatalf("/ui landed on %q, want /ui/", loc)
	}

	// A bad token is refused with the API's own text.
	uiBad := "not-a-token"
	do(t, ctx, "log in with a bad token",
		chromedp.SendKeys(chromedp.ID("token"), uiBad), chromedp.Click(chromedp.ID("login-btn")),
		chromedp.WaitVisible(chromedp.ID("login-error")))
	if got := evalJS[string](t, ctx, `document.getElementById('login-error').textContent`); got != "invalid token" {
		t.Fatalf("bad token: the page says %q, want the API's \"invalid token\"", got)
	}

	// Admin: pools with both dev pools, pairs, a live proxy and keeper.
	uiLogin(t, ctx, c.AdminToken, "admin")
	until(t, ctx, "the pools, pairs, proxies and keepers", 20*time.Second, `
		document.querySelector('#pools tr[data-size="64M"]') && document.querySelector('#pools tr[data-size="256M"]') &&
		document.querySelectorAll('#pairs tr[data-pair]').length === 2 &&
		document.querySelector('#proxies tr[data-proxy]') && document.querySelector('#keepers tr[data-keeper]') &&
		document.querySelector('#admin-jobs tbody tr')`)
	if got := evalJS[string](t, ctx, `document.querySelector('#pools tr[data-size="64M"]').textContent`); !strings.Contains(got, "64M") {
		t.Fatalf("64M pool row: %q", got)
	}
	if got := evalJS[string](t, ctx, `document.querySelector('#proxies tr[data-proxy]').textContent`); !strings.Contains(got, "live") {
		t.Fatalf("proxy row %q: want a live lease", got)
	}
	// The token is in sessionStorage only, never in the URL, a cookie or localStorage.
	state := evalJS[map[string]any](t, ctx, `({s: sessionStorage.getItem('granary.token'), l: localStorage.length, c: document.cookie, u: location.href})`)
	if state["s"] != c.AdminToken || state["l"] != float64(0) || state["c"] != "" || strings.Contains(state["u"].(string), c.AdminToken) {
		t.Fatalf("token storage: %v; want it in sessionStorage only", state)
	}
	uiLogout(t, ctx)

	// Tenant: create a db if there is none, then resize it from the page.
	uiLogin(t, ctx, c.Demo.Token, "tenant")
	until(t, ctx, "the tenant's dbs", 10*time.Second, `document.getElementById('tenant-stats').children.length > 0`)
	if evalJS[bool](t, ctx, `document.querySelectorAll('.db-card').length === 0`) {
		do(t, ctx, "create a 64M db",
			chromedp.SetValue(chromedp.ID("create-size"), "64M"), chromedp.Click(chromedp.ID("create-btn")))
	}
	until(t, ctx, "an active db", 20*time.Second, `document.querySelector('.db-card[data-state="active"]')`)
	if n := evalJS[int](t, ctx, `document.querySelectorAll('#admin tbody tr').length`); n != 0 {
		t.Fatalf("the tenant view kept %d rows of the admin view", n)
	}
	index := evalJS[string](t, ctx, `document.querySelector('.db-card[data-state="active"]').dataset.index`)
	from := evalJS[string](t, ctx, `document.querySelector('.db-card[data-state="active"]').dataset.size`)
	to := "256M"
	if from == to {
		to = "64M"
	}
	// Some data, so the resize has bytes to copy.
	rc := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: atoi(t, index)})
	defer rc.Close()
	val := strings.Repeat("x", 4096)
	for i := 0; i < 256; i++ {
		if err := rc.Set(t.Context(), fmt.Sprintf("k%d", i), val, 0).Err(); err != nil {
			t.Fatalf("write through the proxy: %v", err)
		}
	}
	card := fmt.Sprintf(`.db-card[data-index="%s"]`, index)
	// A refused resize (the dev cluster has no 32M pool) shows the API's own text.
	refused := call(t, "PATCH", c.API+"/v1/dbs/"+index, c.Demo.Token, map[string]string{"size": "32M"})
	if refused.status != 409 {
		t.Fatalf("resize to 32M: %d %s, want 409", refused.status, refused.raw)
	}
	do(t, ctx, "a refused resize",
		chromedp.SetValue(chromedp.CSS(card+" .resize-size"), "32M"), chromedp.Click(chromedp.CSS(card+" .resize-btn")),
		chromedp.WaitVisible(chromedp.CSS(card+" .db-error")))
	if got := evalJS[string](t, ctx, `document.querySelector('`+card+` .db-error').textContent`); got != refused.body["error"] {
		t.Fatalf("refused resize: the page says %q, the API %q", got, refused.body["error"])
	}
	do(t, ctx, "resize from the page",
		chromedp.SetValue(chromedp.CSS(card+" .resize-size"), to), chromedp.Click(chromedp.CSS(card+" .resize-btn")))
	until(t, ctx, "the resize job on the page", 10*time.Second, `document.querySelector('#tenant-jobs tr[data-job]')`)
	until(t, ctx, "the resize done and the new size shown", 90*time.Second, fmt.Sprintf(`(() => {
		const row = [...document.querySelectorAll('#tenant-jobs tr[data-job]')].find((r) => r.children[1].textContent === 'resize');
		if (row && row.dataset.state === 'failed') return true; // reported below
		const c = document.querySelector('%s');
		return row && row.dataset.state === %q && c && c.querySelector('.db-size').textContent === %q && c.dataset.state === 'active';
	})()`, card, metadb.JobDone, to))
	row := evalJS[map[string]any](t, ctx, `(() => { const r = [...document.querySelectorAll('#tenant-jobs tr[data-job]')].find((r) => r.children[1].textContent === 'resize');
		return {state: r.dataset.state, text: r.textContent, job: r.dataset.job}; })()`)
	if row["state"] != metadb.JobDone {
		t.Fatalf("resize job on the page: %v", row)
	}
	// The API agrees with the page.
	db := call(t, "GET", c.API+"/v1/dbs/"+index, c.Demo.Token, nil)
	if db.body["size"] != to {
		t.Fatalf("after the resize the API shows size %v, want %s", db.body["size"], to)
	}
	job := call(t, "GET", c.API+"/v1/jobs/"+row["job"].(string), c.Demo.Token, nil)
	if job.body["state"] != metadb.JobDone || job.body["kind"] != string(metadb.JobResize) {
		t.Fatalf("job %s: %s", row["job"], job.raw)
	}
	// A second db from the form, then dropped from its card after the confirmation.
	do(t, ctx, "create a second db",
		chromedp.SetValue(chromedp.ID("create-size"), "64M"), chromedp.Click(chromedp.ID("create-btn")))
	until(t, ctx, "two active dbs", 20*time.Second, `document.querySelectorAll('.db-card[data-state="active"]').length === 2`)
	until(t, ctx, "no job running", 20*time.Second, `document.querySelector('#tenant-jobs tr[data-job]') && !document.querySelector('#tenant-jobs tr[data-state="running"]')`)
	screenshot(t, ctx, "ui-tenant.png")
	second := evalJS[string](t, ctx, `[...document.querySelectorAll('.db-card')].map((c) => c.dataset.index).find((i) => i !== '`+index+`')`)
	card2 := fmt.Sprintf(`.db-card[data-index="%s"]`, second)
	do(t, ctx, "drop the second db",
		chromedp.Click(chromedp.CSS(card2+" .drop-btn")), chromedp.Click(chromedp.CSS(card2+" .drop-confirm")))
	until(t, ctx, "the drop done and its card gone", 30*time.Second, fmt.Sprintf(`
		[...document.querySelectorAll('#tenant-jobs tr[data-job]')].some((r) => r.children[1].textContent === 'drop' && r.dataset.state === %q) &&
		!document.querySelector('%s')`, metadb.JobDone, card2))
	if n := len(dbList(t, c)); n != 1 {
		t.Fatalf("after the drop the API lists %d dbs, want 1", n)
	}
	uiLogout(t, ctx)
	// Reads and writes on the new slot, so the proxy has talked to both of
	// its pair's servers.
	for i := 0; i < 20; i++ {
		if err := rc.Set(t.Context(), fmt.Sprintf("n%d", i), val, 0).Err(); err != nil {
			t.Fatalf("write after the resize: %v", err)
		}
	}
	reader := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: atoi(t, index)})
	defer reader.Close()
	for i := 0; i < 20; i++ {
		if err := reader.Get(t.Context(), fmt.Sprintf("k%d", i)).Err(); err != nil {
			t.Fatalf("read after the resize: %v", err)
		}
	}
	pair, _ := db.body["slot"].(map[string]any)["pair"].(string)

	// Admin again: the resize is among the jobs.
	uiLogin(t, ctx, c.AdminToken, "admin")
	until(t, ctx, "the resize among the admin's jobs", 10*time.Second,
		fmt.Sprintf(`document.querySelector('#admin-jobs tr[data-job=%q][data-state=%q]')`, row["job"], metadb.JobDone))
	until(t, ctx, "the proxy's last replies from the db's pair", 10*time.Second,
		fmt.Sprintf(`document.querySelectorAll('#pairs tr[data-pair=%q] .badge.reply').length === 2`, pair))
	until(t, ctx, "the keeper's report of the db's pair: both up, its replication lag", 10*time.Second,
		fmt.Sprintf(`document.querySelector('#pairs tr[data-pair=%q] .health .badge.ok') && document.querySelector('#pairs tr[data-pair=%q] .lag .badge')`, pair, pair))
	// The audit log holds the tenant's resize, and the tenants panel its
	// limits (the API's own routes).
	until(t, ctx, "the resize in the audit log", 10*time.Second,
		fmt.Sprintf(`!document.getElementById('audit-card').hidden && [...document.querySelectorAll('#audit tr[data-audit]')].some(
			tr => tr.children[2].textContent === %q && tr.textContent.includes(%q))`, metadb.AuditDBResize, "demo/"+index))
	until(t, ctx, "the demo tenant's limits", 10*time.Second,
		`!document.getElementById('tenants-card').hidden && document.querySelector('#tenants tr[data-tenant="demo"]')`)
	screenshot(t, ctx, "ui-admin.png")
	uiLogout(t, ctx)

	optionalPanels(t, ctx, c)

	if p := problems(); len(p) > 0 {
		t.Fatalf("the page reported errors:\n%s", strings.Join(p, "\n"))
	}
}

// optionalPanels puts the dashboard behind a reverse proxy to the dev API
// that answers GET /v1/admin/audit and GET /v1/admin/tenants with planted
// entries in the API's shapes: the panels page on the cursor and show
// hostile text as text.
func optionalPanels(t *testing.T, ctx context.Context, c *devCluster) {
	t.Helper()
	target, err := url.Parse(c.API)
	if err != nil {
		t.Fatal(err)
	}
	const hostile = `<img src=x onerror="document.title='pwned'">`
	mux := http.NewServeMux()
	admin := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer "+c.AdminToken {
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`{"error":"admin token required"}`))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			h(w, r)
		}
	}
	mux.HandleFunc("GET /v1/admin/audit", admin(func(w http.ResponseWriter, r *http.Request) {
		entry := func(id, action string) map[string]any {
			return map[string]any{"id": id, "time": time.Now().UTC().Format(time.RFC3339), "actor": "tenant:demo",
				"action": action, "target": "db/0", "tenant": "demo", "result": "ok", "request_id": "req-" + id}
		}
		page := map[string]any{"entries": []any{entry("2", "db.resize"), entry("1", hostile)}, "next": "c1"}
		if r.URL.Query().Get("cursor") == "c1" {
			page = map[string]any{"entries": []any{entry("0", "db.create")}, "next": ""}
		}
		_ = json.NewEncoder(w).Encode(page)
	}))
	mux.HandleFunc("GET /v1/admin/tenants", admin(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode([]any{map[string]any{"name": "demo", "max_connections": 100, "ops_per_sec": 5000}})
	}))
	mux.Handle("/", httputil.NewSingleHostReverseProxy(target))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	do(t, ctx, "open the dashboard behind the stub", chromedp.Navigate(srv.URL+"/ui/"), chromedp.WaitVisible(chromedp.ID("login")))
	uiLogin(t, ctx, c.AdminToken, "admin")
	until(t, ctx, "the audit and tenants panels", 10*time.Second, `
		!document.getElementById('audit-card').hidden && document.querySelectorAll('#audit tr[data-audit]').length === 2 &&
		!document.getElementById('tenants-card').hidden && document.querySelector('#tenants tr[data-tenant="demo"]')`)
	if got := evalJS[string](t, ctx, `document.querySelector('#tenants tr[data-tenant="demo"]').textContent`); !strings.Contains(got, "100") || !strings.Contains(got, "5000") {
		t.Fatalf("tenants row %q: want max_connections 100 and ops_per_sec 5000", got)
	}
	if got := evalJS[string](t, ctx, `document.querySelector('#audit tr[data-audit="1"]').children[2].textContent`); got != hostile {
		t.Fatalf("audit action shown as %q, want the text %q", got, hostile)
	}
	if n := evalJS[int](t, ctx, `document.querySelectorAll('#audit img').length`); n != 0 || evalJS[string](t, ctx, `document.title`) == "pwned" {
		t.Fatal("an audit entry's text became markup")
	}
	do(t, ctx, "older audit entries", chromedp.Click(chromedp.ID("audit-more")))
	until(t, ctx, "the second audit page", 10*time.Second,
		`document.querySelectorAll('#audit tr[data-audit]').length === 3 && document.getElementById('audit-more').hidden`)
	shot := os.Getenv("GRANARY_UI_PANELS_SHOT") // a look at the stubbed panels, never committed
	if shot != "" {
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(shot, buf, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	uiLogout(t, ctx)
}

func dbList(t *testing.T, c *devCluster) []any {
	t.Helper()
	var dbs []any
	if err := json.Unmarshal(call(t, "GET", c.API+"/v1/dbs", c.Demo.Token, nil).raw, &dbs); err != nil {
		t.Fatal(err)
	}
	return dbs
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("db index %q: %v", s, err)
	}
	return n
}

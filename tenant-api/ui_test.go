package tenantapi_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestUIStatic checks the dashboard's files: served without auth, with their
// content types and a strict CSP, 404 for anything else, /ui sent to /ui/.
func TestUIStatic(t *testing.T) {
	h := newHarness(t, nil)

	files := []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", `<script type="module" src="app.js"></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", `<link rel="stylesheet" href="style.css">`},
		{"/ui/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/ui/core.js", "text/javascript; charset=utf-8", "export async function api("},
		{"/ui/admin.js", "text/javascript; charset=utf-8", "/v1/admin/pools"},
		{"/ui/tenant.js", "text/javascript; charset=utf-8", "/v1/dbs"},
		{"/ui/style.css", "text/css; charset=utf-8", ".db-card"},
	}
	for _, f := range files {
		t.Run(f.path, func(t *testing.T) {
			for _, auth := range []string{"", "Bearer not-a-token"} {
				r := h.send(request{method: "GET", path: f.path, auth: auth})
				r.want(t, http.StatusOK)
				if got := r.header.Get("Content-Type"); got != f.ctype {
					t.Fatalf("Content-Type: got %q, want %q", got, f.ctype)
				}
				csp := r.header.Get("Content-Security-Policy")
				for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"} {
					if !strings.Contains(csp, want) {
						t.Fatalf("CSP %q lacks %q", csp, want)
					}
				}
				if strings.Contains(csp, "unsafe") {
					t.Fatalf("CSP %q allows unsafe sources", csp)
				}
				for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache", "X-Frame-Options": "DENY"} {
					if got := r.header.Get(k); got != want {
						t.Fatalf("%s: got %q, want %q", k, got, want)
					}
				}
				if !strings.Contains(string(r.body), f.contains) {
					t.Fatalf("body of %s lacks %q", f.path, f.contains)
				}
			}
		})
	}

	t.Run("revalidation", func(t *testing.T) {
		r := h.send(request{method: "GET", path: "/ui/app.js"})
		etag := r.header.Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		req, _ := http.NewRequest("GET", h.srv.URL+"/ui/app.js", nil)
		req.Header.Set("If-None-Match", etag)
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("If-None-Match %s: got %d, want 304", etag, resp.StatusCode)
		}
	})

	t.Run("not found", func(t *testing.T) {
		for _, p := range []string{"/ui/nope.js", "/ui/ui.go", "/ui/../server.go", "/ui/ui/index.html", "/ui/app.js/", "/ui/x/", "/uix"} {
			r := h.send(request{method: "GET", path: p})
			if r.status != http.StatusNotFound {
				t.Fatalf("GET %s: got %d, want 404 (body %s)", p, r.status, r.body)
			}
		}
	})

	t.Run("methods", func(t *testing.T) {
		r := h.send(request{method: "POST", path: "/ui/", body: "token=x", contentType: "application/x-www-form-urlencoded"})
		r.want(t, http.StatusMethodNotAllowed)
		r.errorText(t)
		r = h.send(request{method: "HEAD", path: "/ui/style.css"})
		r.want(t, http.StatusOK)
	})

	t.Run("redirect", func(t *testing.T) {
		c := *h.client
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		resp, err := c.Get(h.srv.URL + "/ui")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
			t.Fatalf("GET /ui: got %d to %q, want 301 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
}

// TestUIMarkupSafe reads the shipped files for what the CSP would refuse
// or what would put data into HTML or the token somewhere lasting.
func TestUIMarkupSafe(t *testing.T) {
	h := newHarness(t, nil)
	html := string(h.send(request{method: "GET", path: "/ui/"}).body)
	var js string
	for _, f := range []string{"app.js", "core.js", "admin.js", "tenant.js"} {
		r := h.send(request{method: "GET", path: "/ui/" + f})
		r.want(t, http.StatusOK)
		js += string(r.body)
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(tag, "src=") {
			t.Fatalf("inline script %s: the CSP refuses it", tag)
		}
	}
	for _, bad := range []*regexp.Regexp{regexp.MustCompile(`<style`), regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`<input[^>]*\sname=`)} {
		if m := bad.FindString(html); m != "" {
			t.Fatalf("index.html has %q: inline style or handler (refused by the CSP) or a named input (submittable)", m)
		}
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "localStorage", "document.cookie", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Fatalf("the dashboard's script uses %s", bad)
		}
	}
}

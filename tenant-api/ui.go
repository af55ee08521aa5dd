package tenantapi

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

// The dashboard: static files served at /ui/, a pure client of the REST API
// with the caller's own token. It needs no auth to load (it holds no data)
// and can do nothing the API would refuse that token.
//
//go:embed ui
var uiFiles embed.FS

// uiCSP lets the dashboard load only its own files and talk only to this
// API: no inline script or style, no framing, no form posts elsewhere.
const uiCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// uiTypes are the content types of the file kinds the dashboard ships; a
// file of any other kind is not served.
var uiTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// uiAsset is one embedded file, read once, with its validator.
type uiAsset struct {
	body  []byte
	ctype string
	etag  string
}

// loadUI reads every servable embedded file, keyed by its path under /ui/.
func loadUI() map[string]uiAsset {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	out := map[string]uiAsset{}
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ctype, ok := uiTypes[path.Ext(p)]
		if !ok {
			return nil
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[p] = uiAsset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out
}

// mountUI serves the dashboard at /ui/ and sends /ui there.
func (s *Server) mountUI(r chi.Router) {
	assets := loadUI()
	r.Get("/ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	r.Handle("/ui/*", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveUI(w, r, assets)
	}))
}

func (s *Server) serveUI(w http.ResponseWriter, r *http.Request, assets map[string]uiAsset) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.writeError(w, r, errorf(errMethod, "method %s is not allowed on %s", r.Method, r.URL.Path))
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/ui/")
	if name == "" {
		name = "index.html"
	}
	a, ok := assets[name]
	if !ok {
		s.writeError(w, r, errorf(errNoRoute, "no file %s in the dashboard", clip(r.URL.Path)))
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// no-cache: the browser keeps a copy but revalidates it (ETag), so a
	// new binary's dashboard is seen at once.
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}

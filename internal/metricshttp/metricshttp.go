// Package metricshttp serves a component's own Prometheus registry on
// /metrics and lists the metric names a set of collectors registers, so that
// the Grafana dashboard in docs/ can be checked against the code.
package metricshttp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Listen opens addr for Serve; addr may use port 0. The error names addr.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen metrics %s: %w", addr, err)
	}
	return ln, nil
}

// Serve answers GET /metrics on ln from g until ctx ends, then shuts the
// server down (scrapes in flight get a second) and returns nil; it returns
// the server's error if it stops otherwise. It takes ownership of ln.
func Serve(ctx context.Context, ln net.Listener, g prometheus.Gatherer) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fqName is how a Desc's String shows its name.
var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Names lists, sorted and once each, the metric names the collectors
// describe (vectors included, whether or not they have children yet).
func Names(cs ...prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	seen := map[string]bool{}
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			seen[m[1]] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Scrape is the text of GET http://addr/metrics, or "" when it does not
// answer 200; for tests and checks that poll a component until it shows a
// sample.
func Scrape(addr string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

// HasSample says whether the exposition text has a sample line that starts
// with prefix (a name and its labels) and whose value is not 0.
func HasSample(text, prefix string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) && !strings.HasSuffix(l, " 0") {
			return true
		}
	}
	return false
}

// HasAll says whether text has a non-zero sample for every prefix (see
// HasSample).
func HasAll(text string, prefixes ...string) bool {
	for _, p := range prefixes {
		if !HasSample(text, p) {
			return false
		}
	}
	return true
}

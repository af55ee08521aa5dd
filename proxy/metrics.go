package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the proxy's Prometheus metrics, on a registry of its own.
// Per-db operation counts and latencies are kept in plain atomics on the
// request path and turned into metrics only when scraped.
type metrics struct {
	reg           *prometheus.Registry
	backendErrors *prometheus.CounterVec
	confirmLag    prometheus.Histogram
	unconfirmed   prometheus.Counter
	held          prometheus.Gauge
	clients       prometheus.GaugeFunc
	protoErrors   prometheus.Counter
	authFailures  prometheus.Counter
	panics        prometheus.Counter
	resyncs       prometheus.Counter
	leaseFailures prometheus.Counter
	version       prometheus.Gauge
	fenced        prometheus.GaugeFunc
	psMoved       *prometheus.CounterVec
	psFollowed    prometheus.Counter
	hotDropped    prometheus.Counter
	all           []prometheus.Collector
}

func newMetrics(p *Proxy) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.backendErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_proxy_backend_errors_total",
		Help: "Backend connection failures by server and stage (dial, write, read, timeout)."}, []string{"backend", "stage"})
	m.confirmLag = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "granary_proxy_confirm_lag_seconds",
		Help: "Time from sending a batch's WAIT to the replica's confirmation.", Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)})
	m.unconfirmed = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_unconfirmed_writes_total",
		Help: "Confirmed-mode writes answered with an error because the replica did not confirm in time."})
	m.held = prometheus.NewGauge(prometheus.GaugeOpts{Name: "granary_proxy_held_writes",
		Help: "Writes currently waiting on a resize hold."})
	m.clients = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "granary_proxy_clients",
		Help: "Connected tenant connections."}, func() float64 { return float64(p.nclients.Load()) })
	m.protoErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_protocol_errors_total",
		Help: "Connections closed for malformed RESP."})
	m.authFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_auth_failures_total",
		Help: "Failed AUTH/HELLO AUTH attempts."})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_panics_total",
		Help: "Connections closed by a recovered panic."})
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_resyncs_total",
		Help: "Full reloads of routes and tenants from metadb."})
	m.leaseFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_lease_failures_total",
		Help: "Failed lease renewals."})
	m.version = prometheus.NewGauge(prometheus.GaugeOpts{Name: "granary_proxy_topology_version",
		Help: "Topology version of the current route snapshot."})
	m.fenced = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "granary_proxy_fenced",
		Help: "1 while the lease has lapsed and writes are refused."}, func() float64 {
		if time.Now().UnixNano() > p.fenceAt.Load() {
			return 1
		}
		return 0
	})
	m.psMoved = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_proxy_pubsub_moved_total",
		Help: "Subscribed connections closed, after an error telling them to resubscribe, because their db moved in a way no message loss could be ruled out (failover, move, dropped, lost)."}, []string{"reason"})
	m.psFollowed = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_pubsub_followed_total",
		Help: "Subscribed connections moved to a resized db's new server without a disconnect."})
	m.hotDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_proxy_hot_key_samples_dropped_total",
		Help: "Sampled commands not counted in the hot-key report because the cap of dbs with a summary was reached."})
	m.all = []prometheus.Collector{m.hotDropped, m.backendErrors, m.confirmLag, m.unconfirmed, m.held, m.clients,
		m.protoErrors, m.authFailures, m.panics, m.resyncs, m.leaseFailures, m.version, m.fenced, m.psMoved, m.psFollowed,
		&dbCollector{p: p}, &tenantCollector{p: p}}
	for _, c := range m.all {
		f(c)
	}
	return m
}

// MetricNames lists the name of every metric a Proxy registers.
func MetricNames() []string { return metricshttp.Names(newMetrics(&Proxy{}).all...) }

var (
	opsDesc = prometheus.NewDesc("granary_proxy_ops_total", "Commands by class and tenant db.", []string{"class", "db"}, nil)
	latDesc = prometheus.NewDesc("granary_proxy_latency_seconds",
		"Time from reading a pipeline to having all its replies, per command, by class and tenant db.", []string{"class", "db"}, nil)
)

// dbCollector exports the per-db atomics.
type dbCollector struct{ p *Proxy }

func (d *dbCollector) Describe(ch chan<- *prometheus.Desc) { ch <- opsDesc; ch <- latDesc }

func (d *dbCollector) Collect(ch chan<- prometheus.Metric) {
	p := d.p
	p.statesMu.Lock()
	sts := make([]*dbState, 0, len(p.states)+1)
	for _, st := range p.states {
		sts = append(sts, st)
	}
	p.statesMu.Unlock()
	sts = append(sts, p.noDB)
	for _, st := range sts {
		for k := range st.ops {
			if n := st.ops[k].Load(); n > 0 {
				ch <- prometheus.MustNewConstMetric(opsDesc, prometheus.CounterValue, float64(n), classNames[k], st.label)
				count, sum, buckets := st.lat[k].snapshot()
				ch <- prometheus.MustNewConstHistogram(latDesc, count, sum, buckets, classNames[k], st.label)
			}
		}
	}
}

// histogram is a lock-free latency histogram with exponential buckets
// (50µs … ~1.6s), cheap enough for the request path.
type histogram struct {
	counts [numBuckets + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

const numBuckets = 16

var bucketBounds = func() [numBuckets]float64 {
	var b [numBuckets]float64
	v := 50e-6
	for i := range b {
		b[i] = v
		v *= 2
	}
	return b
}()

func (h *histogram) observe(d time.Duration, n uint64) {
	s := d.Seconds()
	i := 0
	for i < numBuckets && s > bucketBounds[i] {
		i++
	}
	h.counts[i].Add(n)
	h.sumNs.Add(uint64(d) * n)
}

func (h *histogram) snapshot() (uint64, float64, map[float64]uint64) {
	buckets := make(map[float64]uint64, numBuckets)
	var cum uint64
	for i := 0; i < numBuckets; i++ {
		cum += h.counts[i].Load()
		buckets[bucketBounds[i]] = cum
	}
	cum += h.counts[numBuckets].Load()
	return cum, float64(h.sumNs.Load()) / 1e9, buckets
}

// MetricsAddr is the address /metrics listens on: "" before the proxy
// listens (see Ready), or when Config.MetricsAddr is empty.
func (p *Proxy) MetricsAddr() string { return p.metricsAddr() }

// metricsServer is the /metrics HTTP server.
func (p *Proxy) metricsServer() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{}))
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

// serveMetrics serves /metrics on ln until ctx ends.
func serveMetrics(ctx context.Context, srv *http.Server, ln net.Listener) error {
	err := srv.Serve(ln)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

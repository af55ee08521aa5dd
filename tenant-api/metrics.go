package tenantapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one Server's Prometheus metrics, in a registry of its own so
// that several Servers in one process (tests, `granary dev`) never collide.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	// auditDropped counts refusals left out of the audit stream.
	auditDropped prometheus.Counter
	all          []prometheus.Collector
}

func newMetrics(store Store) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "granary", Subsystem: "api", Name: "requests_total",
			Help: "API requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "granary", Subsystem: "api", Name: "request_duration_seconds",
			Help:    "API request latency by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "granary", Subsystem: "api", Name: "audit_dropped_total",
			Help: "Refused calls and credentials not recorded in the audit stream: past the per-address or per-tenant share, or the total, of a minute.",
		}),
	}
	m.all = []prometheus.Collector{m.requests, m.latency, m.auditDropped, &quotaCollector{store: store},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	m.reg.MustRegister(m.all...)
	return m
}

// MetricNames lists the name of every metric a Server registers.
func MetricNames() []string { return metricshttp.Names(newMetrics(nil).all...) }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// middleware counts every request under its chi route pattern (never the raw
// path, so tenants cannot grow the label set), "unmatched" for unknown URLs.
func (m *metrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			code := ww.Status()
			if code == 0 {
				code = http.StatusOK
			}
			method := r.Method
			switch method {
			case http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete, http.MethodPut, http.MethodHead, http.MethodOptions:
			default:
				method = "other"
			}
			m.requests.WithLabelValues(route, method, strconv.Itoa(code)).Inc()
			m.latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(ww, r)
	})
}

// quotaCollector reports, at each scrape, each db's share of its quota and
// how many dbs are at 80 % or more (the REST warning) and banned. It reads
// metadb at scrape time, bounded by a short timeout, so the figures are as
// fresh as the keeper's last measurement.
type quotaCollector struct {
	store Store
}

var (
	descRatio = prometheus.NewDesc("granary_db_quota_used_ratio",
		"Measured size of a tenant db divided by its quota.", []string{"tenant", "index", "size"}, nil)
	descWarn = prometheus.NewDesc("granary_dbs_quota_warning",
		"Tenant dbs using 80% of their quota or more.", nil, nil)
	descBanned = prometheus.NewDesc("granary_dbs_write_banned",
		"Tenant dbs whose memory-growing writes are refused for being over quota.", nil, nil)
)

func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRatio
	ch <- descWarn
	ch <- descBanned
}

func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dbs, err := c.store.AllDBs(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descWarn, err)
		return
	}
	warn, banned := 0, 0
	for _, db := range dbs {
		if db.QuotaBytes <= 0 {
			continue
		}
		ratio := float64(db.UsedBytes) / float64(db.QuotaBytes)
		ch <- prometheus.MustNewConstMetric(descRatio, prometheus.GaugeValue, ratio, db.Tenant, strconv.Itoa(db.Index), db.Size)
		if ratio >= 0.8 {
			warn++
		}
		if db.Banned {
			banned++
		}
	}
	ch <- prometheus.MustNewConstMetric(descWarn, prometheus.GaugeValue, float64(warn))
	ch <- prometheus.MustNewConstMetric(descBanned, prometheus.GaugeValue, float64(banned))
}

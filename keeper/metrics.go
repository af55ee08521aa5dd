package keeper

import (
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Keeper's Prometheus metrics, on a registry of its own so
// that several keepers in one process (tests, `granary dev`) never collide.
// The pair label is bounded by the fleet (and a released pair's series are
// deleted); no label names a tenant, a db or a key.
type metrics struct {
	reg             *prometheus.Registry
	all             []prometheus.Collector
	probeLatency    *prometheus.HistogramVec
	probeFailures   *prometheus.CounterVec
	failovers       *prometheus.CounterVec
	failoverErrors  prometheus.Counter
	measurements    *prometheus.CounterVec
	measureDuration *prometheus.HistogramVec
	measureFailures prometheus.Counter
	copiedKeys      prometheus.Counter
	copiedBytes     prometheus.Counter
	attaches        *prometheus.CounterVec
	stepFailures    *prometheus.CounterVec
	leaseFailures   prometheus.Counter
	keyReports      *prometheus.CounterVec
}

// Label values.
const (
	roleMaster  = "master"
	roleReplica = "replica"

	attachInSync      = "in_sync"           // the spare caught up and goes on to record
	attachUnreachable = "spare_unreachable" // the spare did not answer and was put aside
)

func newMetrics(k *Keeper) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	watched := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "granary_keeper_watched_pairs",
		Help: "Pairs this keeper watches now."}, func() float64 { return float64(len(k.myPairs())) })
	m.probeLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "granary_keeper_probe_duration_seconds",
		Help:    "Time of one probe (PING and INFO) of a server, by pair and role (master, replica); failed probes included.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 14)}, []string{"pair", "role"})
	m.probeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_probe_failures_total",
		Help: "Probes that failed or timed out, by pair and role."}, []string{"pair", "role"})
	m.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_failovers_total",
		Help: "Replicas promoted and recorded as their pair's master, by reason."}, []string{"reason"})
	m.failoverErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_keeper_failover_failures_total",
		Help: "Failover attempts that failed (promotion or its record) and are retried on the next probe."})
	m.measurements = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_measurements_total",
		Help: "Db size measurements recorded, by method (exact, sampled)."}, []string{"method"})
	m.measureDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "granary_keeper_measurement_duration_seconds",
		Help:    "Time of one db size measurement on the replica, by method (exact, sampled).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"method"})
	m.measureFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_keeper_measurement_failures_total",
		Help: "Measurements that failed (stale ones, of dbs that moved or went away, not counted)."})
	m.copiedKeys = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_keeper_resize_copied_keys_total",
		Help: "Keys copied by resizes (MIGRATE … COPY REPLACE), re-copies of changed keys included."})
	m.copiedBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_keeper_resize_copied_bytes_total",
		Help: "Estimated bytes copied by resizes: keys copied times the sampled mean key size of their db."})
	m.attaches = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_replica_attaches_total",
		Help: "Spares attached as a pair's new replica after a failover, by result (in_sync, spare_unreachable)."}, []string{"result"})
	m.stepFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_job_step_failures_total",
		Help: "Failed attempts of a keeper's job step, retried at the next poll, by kind and step."}, []string{"kind", "step"})
	m.leaseFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_keeper_lease_failures_total",
		Help: "Failed renewals of the keeper's lease."})
	m.keyReports = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_keeper_key_reports_total",
		Help: "Key reports (biggest keys of a db, scanned on the replica) finished, by result (complete, partial, failed)."}, []string{"result"})
	m.all = []prometheus.Collector{m.keyReports, watched, m.probeLatency, m.probeFailures, m.failovers, m.failoverErrors,
		m.measurements, m.measureDuration, m.measureFailures, m.copiedKeys, m.copiedBytes, m.attaches,
		m.stepFailures, m.leaseFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	m.reg.MustRegister(m.all...)
	return m
}

// MetricNames lists the name of every metric a Keeper registers.
func MetricNames() []string { return metricshttp.Names(newMetrics(&Keeper{}).all...) }

// probed records one probe of the server of pair in role.
func (m *metrics) probed(pair, role string, took time.Duration, err error) {
	m.probeLatency.WithLabelValues(pair, role).Observe(took.Seconds())
	if err != nil {
		m.probeFailures.WithLabelValues(pair, role).Inc()
	}
}

// forgetPair drops the series of a pair this keeper no longer watches.
func (m *metrics) forgetPair(pair string) {
	m.probeLatency.DeletePartialMatch(prometheus.Labels{"pair": pair})
	m.probeFailures.DeletePartialMatch(prometheus.Labels{"pair": pair})
}

// measured records one recorded measurement.
func (m *metrics) measured(exact bool, took time.Duration) {
	method := "sampled"
	if exact {
		method = "exact"
	}
	m.measurements.WithLabelValues(method).Inc()
	m.measureDuration.WithLabelValues(method).Observe(took.Seconds())
}

// copied returns what a resize's copy session calls after each MIGRATE of n
// keys of a db whose keys average avg bytes.
func (m *metrics) copied(avg int64) func(n int) {
	return func(n int) {
		m.copiedKeys.Add(float64(n))
		m.copiedBytes.Add(float64(int64(n) * avg))
	}
}

package master

import (
	"context"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/metadb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Master's Prometheus metrics, on a registry of its own so
// that several masters in one process (tests, `granary dev`) never collide.
// Labels are bounded: job kinds and steps come from metadb's job protocol,
// pair states and sizes from the pools; no label names a tenant or a job.
type metrics struct {
	reg            *prometheus.Registry
	all            []prometheus.Collector
	isLeader       prometheus.Gauge
	leaseRenewals  prometheus.Counter
	leaseFailures  prometheus.Counter
	jobsRunning    *prometheus.GaugeVec
	jobsFinished   *prometheus.CounterVec
	stepDuration   *prometheus.HistogramVec
	stepRetries    *prometheus.CounterVec
	quotaBans      prometheus.Counter
	quotaUnbans    prometheus.Counter
	reclaimPasses  prometheus.Counter
	reclaimedAddrs prometheus.Counter
}

func newMetrics(store Store) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.isLeader = prometheus.NewGauge(prometheus.GaugeOpts{Name: "granary_master_is_leader",
		Help: "1 while this master holds the leader lease."})
	m.leaseRenewals = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_lease_renewals_total",
		Help: "Successful renewals of the leader lease."})
	m.leaseFailures = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_lease_failures_total",
		Help: "Leader lease renewals that failed or found another master leading."})
	m.jobsRunning = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "granary_master_jobs_running",
		Help: "Jobs this master is driving now, by kind (0 on a standby)."}, []string{"kind"})
	m.jobsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_master_jobs_finished_total",
		Help: "Jobs seen ending by this master's runners, by kind and result (done, failed)."}, []string{"kind", "result"})
	m.stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "granary_master_job_step_duration_seconds",
		Help:    "Time from a job step's start to its record, master's and keeper's steps alike, by kind and step.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"kind", "step"})
	m.stepRetries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "granary_master_job_step_retries_total",
		Help: "Failed attempts of a master's job step, each retried after a backoff, by kind and step."}, []string{"kind", "step"})
	m.quotaBans = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_quota_bans_total",
		Help: "Write bans put on dbs measured over their quota."})
	m.quotaUnbans = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_quota_unbans_total",
		Help: "Write bans lifted from dbs measured back under their quota."})
	m.reclaimPasses = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_reclaim_passes_total",
		Help: "Passes over the demoted masters, looking for ones that answer again."})
	m.reclaimedAddrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "granary_master_reclaimed_total",
		Help: "Demoted masters emptied and returned to the spare pool."})
	m.all = []prometheus.Collector{m.isLeader, m.leaseRenewals, m.leaseFailures, m.jobsRunning, m.jobsFinished,
		m.stepDuration, m.stepRetries, m.quotaBans, m.quotaUnbans, m.reclaimPasses, m.reclaimedAddrs,
		&pairsCollector{store: store},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	m.reg.MustRegister(m.all...)
	return m
}

// MetricNames lists the name of every metric a Master registers.
func MetricNames() []string { return metricshttp.Names(newMetrics(nil).all...) }

// banChanged counts one quota decision applied.
func (m *metrics) banChanged(ban bool) {
	if ban {
		m.quotaBans.Inc()
	} else {
		m.quotaUnbans.Inc()
	}
}

// jobSeen observes the steps a job's log recorded since the runner last
// loaded it (seen entries, -1 before the first load, when the history is
// left alone: a previous leader observed it) and returns the new count. A
// step lasts from the entry before it (or the job's creation) to its own.
// Log entries that are not steps of the kind (claim, promote…) are not
// observed but still mark the start of the next step.
func (m *metrics) jobSeen(j *metadb.Job, seen int) int {
	if seen < 0 || seen > len(j.Log) {
		return len(j.Log)
	}
	for i := seen; i < len(j.Log); i++ {
		e := j.Log[i]
		if _, _, ok := metadb.StepOf(j.Kind, e.Step); !ok {
			continue
		}
		start := j.Created
		if i > 0 {
			start = j.Log[i-1].At
		}
		t0, err0 := time.Parse(time.RFC3339Nano, start)
		t1, err1 := time.Parse(time.RFC3339Nano, e.At)
		if err0 == nil && err1 == nil && !t1.Before(t0) {
			m.stepDuration.WithLabelValues(string(j.Kind), string(e.Step)).Observe(t1.Sub(t0).Seconds())
		}
	}
	return len(j.Log)
}

// pairsCollector reports, at each scrape, the pairs recorded in metadb by
// size and state, read within a short timeout (none when metadb does not
// answer). Every master reports the
// same figures; dashboards take the max over masters.
type pairsCollector struct{ store Store }

var descPairs = prometheus.NewDesc("granary_master_pairs",
	"Pairs recorded in metadb by size class and state.", []string{"size", "state"}, nil)

var descDegraded = prometheus.NewDesc("granary_master_pairs_writes_degraded",
	"Pairs whose confirmed dbs' writes are acknowledged without a replica (no replica for longer than --degrade-after), by size class.", []string{"size"}, nil)

var descSpares = prometheus.NewDesc("granary_master_spares_free",
	"Spare servers in the pool, ready to replace a failed pair's replica; 0 means the next failover leaves its pair without one.", nil, nil)

func (c *pairsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPairs
	ch <- descDegraded
	ch <- descSpares
}

func (c *pairsCollector) Collect(ch chan<- prometheus.Metric) {
	if c.store == nil { // MetricNames' instance
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pairs, err := c.store.Pairs(ctx, "")
	if err != nil {
		// Left out of this scrape rather than failing it: while metadb is
		// unreachable the lease metrics matter most.
		return
	}
	type key struct{ size, state string }
	n := map[key]int{}
	degraded := map[string]int{}
	for _, p := range pairs {
		n[key{p.Size, p.State}]++
		if _, ok := degraded[p.Size]; !ok || p.WritesDegraded {
			degraded[p.Size] += btoi(p.WritesDegraded)
		}
	}
	for k, v := range n {
		ch <- prometheus.MustNewConstMetric(descPairs, prometheus.GaugeValue, float64(v), k.size, k.state)
	}
	for size, v := range degraded {
		ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, float64(v), size)
	}
	if spares, err := c.store.Spares(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descSpares, prometheus.GaugeValue, float64(len(spares)))
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

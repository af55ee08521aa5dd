package proxy

import (
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/prometheus/client_golang/prometheus"
)

// Per-tenant limits. The admin sets them in metadb (metadb.SetLimits),
// which announces them with a TenantLimits message; a full reload reads
// them from the tenant records, so a lost message is healed by the reload
// that its version gap causes.
//
//   - Connections: a tenant's authenticated connections to this proxy
//     (per proxy, as twemproxy's and Redis's own maxclients are). They are
//     counted at AUTH, when the tenant is known; one over the limit gets
//     Redis's "-ERR max number of clients reached" and is closed. Lowering
//     the limit closes nothing: it refuses new connections until enough
//     leave.
//   - Commands: each of the tenant's dbs has a token bucket of OpsPerSec
//     commands per second and RateBurst's worth of burst, on this proxy.
//     A command forwarded to a db whose bucket is empty is refused at once
//     with "-ERR rate limit exceeded for this db: N ops/s (try again
//     later)", as hosted Redis services do, rather than queued: a queue
//     would hold the client's connection and the proxy's memory, and a
//     client that is told can back off. The check is one pointer test when
//     the db has no limit, and one atomic compare-and-swap when it has,
//     on the coarse clock (10 ms steps, an atomic load; reading the real
//     clock costs 150 ns on this kvm-clock machine): hence a burst of at
//     least 50 ms, so that the steps do not eat into the rate.

// tenantState is what the proxy keeps about one tenant across snapshots.
type tenantState struct {
	name         string
	conns        atomic.Int64 // authenticated connections of the tenant
	refusedConns atomic.Uint64
	refusedRate  atomic.Uint64
}

// acquire counts one more connection of the tenant unless that would pass
// max. Concurrent AUTHs never admit more than max.
func (t *tenantState) acquire(max int64) bool {
	if t.conns.Add(1) > max {
		t.conns.Add(-1)
		return false
	}
	return true
}

func (p *Proxy) tenantState(name string) *tenantState {
	p.statesMu.Lock()
	defer p.statesMu.Unlock()
	return p.tenantStateLocked(name)
}

// tenantStateLocked is tenantState with statesMu held.
func (p *Proxy) tenantStateLocked(name string) *tenantState {
	ts := p.tenantStates[name]
	if ts == nil {
		ts = &tenantState{name: name}
		p.tenantStates[name] = ts
	}
	return ts
}

// newTenantInfo is t as a snapshot keeps it, with its effective limits.
func (p *Proxy) newTenantInfo(t *metadb.Tenant) *tenantInfo {
	return p.limited(&tenantInfo{name: t.Name, hash: t.PasswordHash, st: p.tenantState(t.Name)}, t.Limits)
}

// limited sets ti's limits as the admin set them (l) and as they take
// effect, the defaults filling l's zero fields, and returns ti.
func (p *Proxy) limited(ti *tenantInfo, l metadb.Limits) *tenantInfo {
	ti.set, ti.maxConns, ti.ops = l, p.cfg.DefaultMaxConnections, p.cfg.DefaultOpsPerSec
	if l.MaxConnections > 0 {
		ti.maxConns = l.MaxConnections
	}
	if l.OpsPerSec > 0 {
		ti.ops = l.OpsPerSec
	}
	return ti
}

// opsOf is the effective ops/s limit of tenant's dbs in s (0: none).
func (p *Proxy) opsOf(s *snapshot, tenant string) int64 {
	if ti := s.tenants[tenant]; ti != nil {
		return ti.ops
	}
	return p.cfg.DefaultOpsPerSec
}

// relimit gives the tenant's routes in s (a copy being built) the tenant's
// current ops/s limit.
func (p *Proxy) relimit(s *snapshot, tenant string) {
	ops := p.opsOf(s, tenant)
	for k, d := range s.dbs {
		if k.tenant == tenant && d.rate.limit() != ops {
			s.dbs[k] = d.with(func(d *dbRoute) { d.rate = p.bucketFor(d.st, ops) })
		}
	}
}

// bucketFor is st's bucket for ops/s: the one it has if the rate is the
// same (its tokens carry over a snapshot change), else a full new one;
// nil for no limit.
func (p *Proxy) bucketFor(st *dbState, ops int64) *bucket {
	if ops <= 0 {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.bucket == nil || st.bucket.rate != ops {
		st.bucket = newBucket(ops, p.cfg.RateBurst, coarseNow())
	}
	return st.bucket
}

// bucket is a token bucket in its GCRA form: one atomic, the theoretical
// arrival time of the next command, so that taking a token is a load and a
// compare-and-swap, with no lock and no allocation.
type bucket struct {
	rate     int64 // ops/s
	interval int64 // ns per op
	window   int64 // how far ahead of now tat may run: the burst, in ns
	tat      atomic.Int64
	err      error // the refusal, made once
}

// newBucket is a full bucket of rate ops/s and burst's worth of tokens (at
// least one), as of now (unix ns).
func newBucket(rate int64, burst time.Duration, now int64) *bucket {
	interval := max(int64(time.Second)/rate, 1)
	n := max(rate*int64(burst)/int64(time.Second), 1)
	b := &bucket{rate: rate, interval: interval, window: n * interval,
		err: fmt.Errorf("%w: %d ops/s (try again later)", ErrRateLimit, rate)}
	b.tat.Store(now)
	return b
}

// take reports whether a command may run at now (unix ns), and if so
// spends its token.
func (b *bucket) take(now int64) bool {
	for {
		tat := b.tat.Load()
		next := max(tat, now) + b.interval
		if next-now > b.window {
			return false
		}
		if b.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

// limit is the bucket's rate; 0 for a nil bucket (no limit).
func (b *bucket) limit() int64 {
	if b == nil {
		return 0
	}
	return b.rate
}

// rated reports whether a command takes a token of its db's ops/s: every
// command that reaches the db (forwarded, blocking, and those of the
// proxy's own that forward: scripts, PUBLISH, COPY, FLUSHALL), but not the
// connection's own (AUTH, PING, SELECT, INFO…) nor MULTI, EXEC and WATCH,
// whose queued commands took theirs.
func rated(spec *cmdSpec) bool {
	switch spec.kind {
	case kForward, kBlocking:
		return true
	case kLocal:
		return spec.class != classLocal && spec.class != classTx
	}
	return false
}

// admitRate takes a token from the selected db's bucket for one command.
// It returns nil when the db has no limit or no route (the command's own
// path reports that), or the refusal (made once per bucket: refusing
// allocates nothing either).
func (c *client) admitRate() error {
	db, err := c.route()
	if err != nil || db.rate == nil {
		return nil
	}
	if db.rate.take(coarseNow()) {
		return nil
	}
	db.st.tenant.refusedRate.Add(1)
	return db.rate.err
}

// admitTenant makes the connection one of ti's, within its connection
// limit; a connection that already is one of ti's is not counted again.
func (c *client) admitTenant(ti *tenantInfo) error {
	if c.ts == ti.st {
		return nil
	}
	if !ti.st.acquire(ti.maxConns) {
		ti.st.refusedConns.Add(1)
		return ErrTooMany
	}
	c.releaseTenant()
	c.ts = ti.st
	return nil
}

// releaseTenant stops counting the connection as its tenant's.
func (c *client) releaseTenant() {
	if c.ts != nil {
		c.ts.conns.Add(-1)
		c.ts = nil
	}
}

var (
	tenantConnsDesc = prometheus.NewDesc("granary_proxy_tenant_connections",
		"Authenticated connections of a tenant to this proxy.", []string{"tenant"}, nil)
	tenantRefusalsDesc = prometheus.NewDesc("granary_proxy_tenant_refusals_total",
		"Connections (reason connections) and commands (reason rate) refused by a tenant's limits.", []string{"tenant", "reason"}, nil)
	tenantMaxConnsDesc = prometheus.NewDesc("granary_proxy_tenant_max_connections",
		"A tenant's effective connection limit on this proxy.", []string{"tenant"}, nil)
	tenantOpsDesc = prometheus.NewDesc("granary_proxy_tenant_ops_per_sec_limit",
		"A tenant's effective commands-per-second limit per db on this proxy (0: none).", []string{"tenant"}, nil)
)

// tenantCollector exports the per-tenant counters and limits; its only
// label is the tenant, so the series grow with tenants, not with keys,
// commands or clients.
type tenantCollector struct{ p *Proxy }

func (d *tenantCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tenantConnsDesc
	ch <- tenantRefusalsDesc
	ch <- tenantMaxConnsDesc
	ch <- tenantOpsDesc
}

func (d *tenantCollector) Collect(ch chan<- prometheus.Metric) {
	p := d.p
	p.statesMu.Lock()
	sts := make([]*tenantState, 0, len(p.tenantStates))
	for _, ts := range p.tenantStates {
		sts = append(sts, ts)
	}
	p.statesMu.Unlock()
	sort.Slice(sts, func(i, j int) bool { return sts[i].name < sts[j].name })
	snap := p.snap.Load()
	for _, ts := range sts {
		ch <- prometheus.MustNewConstMetric(tenantConnsDesc, prometheus.GaugeValue, float64(ts.conns.Load()), ts.name)
		ch <- prometheus.MustNewConstMetric(tenantRefusalsDesc, prometheus.CounterValue, float64(ts.refusedConns.Load()), ts.name, "connections")
		ch <- prometheus.MustNewConstMetric(tenantRefusalsDesc, prometheus.CounterValue, float64(ts.refusedRate.Load()), ts.name, "rate")
		if ti := snap.tenants[ts.name]; ti != nil {
			ch <- prometheus.MustNewConstMetric(tenantMaxConnsDesc, prometheus.GaugeValue, float64(ti.maxConns), ts.name)
			ch <- prometheus.MustNewConstMetric(tenantOpsDesc, prometheus.GaugeValue, float64(ti.ops), ts.name)
		}
	}
}

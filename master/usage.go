package master

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/internal/defaults"
	"github.com/granary-db/granary/metadb"
)

// Usage history and alerts: the leader samples every serving db each
// Interval (used bytes and ban from the db record, ops/s and connections
// from the proxies' reports), appends the points to metadb under its fence,
// fires an alert on each crossing of a db's thresholds (with hysteresis),
// and delivers the alerts to their webhooks (alerts.go). Nothing of it goes
// to the audit stream: alerts live in each db's bounded alert history.

// UsageConfig tunes the usage history and alert delivery. Zero fields take
// the defaults.
type UsageConfig struct {
	// Interval between samples. Default 10s.
	Interval time.Duration
	// Keep is how many points each db's series keeps. Default 8640 (24h
	// at the default interval).
	Keep int
	// AlertPoll is how often pending alerts are looked at. Default 200ms.
	AlertPoll time.Duration
	// RetryBase is the wait after a failed delivery, doubled after each
	// further failure up to RetryMax. Defaults 1s and 1m.
	RetryBase, RetryMax time.Duration
	// Attempts bounds the deliveries of one alert. Default 6.
	Attempts int
	// Timeout bounds one delivery attempt (connect, TLS, answer). Default 2s.
	Timeout time.Duration
	// MaxAge bounds the age of a db's points. Default 24h.
	MaxAge time.Duration
	// Workers bounds the deliveries in flight; each tenant has at most one
	// in flight, and tenants take turns. Default 4.
	Workers int
	// TenantPending caps a tenant's pending alerts (one per db and metric
	// at most); a crossing beyond it is recorded as dropped. Default 32.
	TenantPending int
	// WebhookAllow lists CIDR prefixes webhooks may reach although they
	// are not public unicast (an operator's trusted network; tests allow
	// loopback). Default none.
	WebhookAllow []string
	// WebhookDeny lists further host:port addresses webhooks must never
	// reach, whatever WebhookAllow says (the tenant APIs, say); metadb,
	// every pair server, spare, proxy and keeper are denied anyway.
	WebhookDeny []string
}

func (c *UsageConfig) fill() error {
	defaults.Fill(&c.Interval, 10*time.Second)
	defaults.Fill(&c.Keep, 8640)
	defaults.Fill(&c.AlertPoll, 200*time.Millisecond)
	defaults.Fill(&c.RetryBase, time.Second)
	defaults.Fill(&c.RetryMax, time.Minute)
	defaults.Fill(&c.Attempts, 6)
	defaults.Fill(&c.Timeout, 2*time.Second)
	defaults.Fill(&c.MaxAge, 24*time.Hour)
	defaults.Fill(&c.Workers, 4)
	defaults.Fill(&c.TenantPending, 32)
	if c.Interval < 0 || c.Keep < 0 || c.AlertPoll < 0 || c.RetryBase < 0 || c.RetryMax < 0 || c.Attempts < 0 ||
		c.Timeout < 0 || c.MaxAge < 0 || c.Workers < 0 || c.TenantPending < 0 {
		return errors.New("usage config: negative value")
	}
	return nil
}

// usageStore is what the usage pass needs of metadb.
type usageStore interface {
	AppendUsage(ctx context.Context, f *metadb.Fence, points []metadb.UsagePoint, keep int, maxAge time.Duration) error
	TenantAlertRules(ctx context.Context, tenant string) (map[int]*metadb.AlertRule, error)
	FireAlerts(ctx context.Context, f *metadb.Fence, tenant string, index int, prev, next metadb.AlertRule, alerts []*metadb.Alert, tenantCap int) (bool, error)
	PendingAlerts(ctx context.Context) ([]*metadb.Alert, error)
	RecordDelivery(ctx context.Context, f *metadb.Fence, a *metadb.Alert) error
	AlertRule(ctx context.Context, tenant string, index int) (*metadb.AlertRule, error)
	PairHealth(ctx context.Context, id string) (*metadb.PairHealth, error)
	Spares(ctx context.Context) ([]string, error)
	MetadbAddrs(ctx context.Context) []string
}

// rearm is the hysteresis of every threshold: once above, a metric must
// fall below rearm × threshold before it can fire again, so a value
// hovering at the threshold fires once.
const rearm = 0.9

// crossing is the alert policy for one threshold: above is whether the
// metric counts as above it (at or over it when it was below, at or over
// rearm × threshold when it was above; a threshold of 0 is off, never
// above); fire is true only on the sample that goes above after one that
// was not.
func crossing(wasAbove bool, value, threshold float64) (above, fire bool) {
	if threshold <= 0 {
		return false, false
	}
	if wasAbove {
		return value >= rearm*threshold, false
	}
	above = value >= threshold
	return above, above
}

// evaluate applies a rule to a point: the rule with its new crossing state,
// the alerts it fires and whether anything changed. Without opsKnown (some
// proxy has no rate yet, as after a change of leader) the ops threshold
// keeps its state: a partial sum must neither re-arm nor fire it; an
// unknown replication lag (-1) keeps the lag threshold's state likewise.
func evaluate(r metadb.AlertRule, pt metadb.UsagePoint, opsKnown bool) (metadb.AlertRule, []*metadb.Alert, bool) {
	usedPct := 0.0
	if pt.QuotaBytes > 0 {
		usedPct = 100 * float64(pt.UsedBytes) / float64(pt.QuotaBytes)
	}
	values := map[string]float64{
		metadb.MetricUsedPct: usedPct, metadb.MetricOpsPerSec: pt.OpsPerSec, metadb.MetricReplLag: float64(pt.ReplLagBytes),
	}
	known := map[string]bool{metadb.MetricUsedPct: true, metadb.MetricOpsPerSec: opsKnown, metadb.MetricReplLag: pt.ReplLagBytes >= 0}
	next := r
	next.Above = map[string]bool{}
	changed := false
	var out []*metadb.Alert
	for _, metric := range metadb.AlertMetrics {
		was := r.Above[metric]
		now := was
		if known[metric] {
			var fire bool
			now, fire = crossing(was, values[metric], r.Threshold(metric))
			if fire {
				out = append(out, &metadb.Alert{Tenant: pt.Tenant, Index: pt.Index, Metric: metric, Value: values[metric],
					Threshold: r.Threshold(metric), Time: pt.Time})
			}
		}
		if now {
			next.Above[metric] = true
		}
		changed = changed || now != was
	}
	if len(next.Above) == 0 {
		next.Above = nil
	}
	return next, out, changed
}

// proxySeen is the last report seen from one proxy and the rates it gave.
type proxySeen struct {
	started, reported time.Time
	ops               map[string]uint64
	rates             map[string]float64
}

// opsRates turns the proxies' command counters into ops/s per db.
type opsRates struct{ last map[string]proxySeen }

// observe takes the live proxies' reports and returns each db's ops/s
// summed over them: the counter's growth between a proxy's last two
// reports. A proxy seen for the first time, or restarted, counts from its
// next report; a report seen again keeps the rates it gave. known is false
// while some proxy has no rate yet.
func (o *opsRates) observe(ms []*metadb.Member) (total map[string]float64, known bool) {
	next := make(map[string]proxySeen, len(ms))
	total, known = map[string]float64{}, true
	for _, mb := range ms {
		seen := proxySeen{started: mb.Started, reported: mb.Reported, ops: mb.DBOps}
		prev, ok := o.last[mb.ID]
		switch {
		case ok && prev.started.Equal(mb.Started) && prev.reported.Equal(mb.Reported):
			seen = prev
		case ok && prev.started.Equal(mb.Started) && mb.Reported.After(prev.reported):
			dt := mb.Reported.Sub(prev.reported).Seconds()
			seen.rates = map[string]float64{}
			for k, n := range mb.DBOps {
				if p := prev.ops[k]; n >= p {
					seen.rates[k] = float64(n-p) / dt
				}
			}
		}
		next[mb.ID] = seen
		if seen.rates == nil {
			known = false
		}
		for k, r := range seen.rates {
			total[k] += r
		}
	}
	o.last = next
	return total, known
}

// usageSampler is the usage pass: each call samples every serving db once.
func (m *Master) usageSampler() func(context.Context, *metadb.Fence) error {
	rates := &opsRates{}
	return func(ctx context.Context, f *metadb.Fence) error {
		dbs, err := m.store.AllDBs(ctx)
		if err != nil {
			return fmt.Errorf("list dbs: %w", err)
		}
		proxies, err := m.store.LiveMembers(ctx, metadb.KindProxy)
		if err != nil {
			return fmt.Errorf("list proxies: %w", err)
		}
		ops, opsKnown := rates.observe(proxies)
		conns := map[string]int{}
		for _, p := range proxies {
			for t, n := range p.TenantConns {
				conns[t] += n
			}
		}
		now := time.Now().UTC()
		lag := map[string]int64{} // by pair; -1 unknown
		var points []metadb.UsagePoint
		for _, db := range dbs {
			if db.State != metadb.DBActive && db.State != metadb.DBResizing {
				continue
			}
			l, ok := lag[db.Pair]
			if !ok {
				l = -1
				if h, err := m.store.PairHealth(ctx, db.Pair); err == nil {
					l = h.LagBytes
				}
				lag[db.Pair] = l
			}
			points = append(points, metadb.UsagePoint{Tenant: db.Tenant, Index: db.Index, Time: now,
				UsedBytes: db.UsedBytes, QuotaBytes: db.QuotaBytes, Banned: db.Banned, ReplLagBytes: l,
				OpsPerSec: ops[db.Tenant+"/"+strconv.Itoa(db.Index)], Connections: conns[db.Tenant]})
		}
		if err := m.store.AppendUsage(ctx, f, points, m.cfg.Usage.Keep, m.cfg.Usage.MaxAge); err != nil {
			return fmt.Errorf("append usage: %w", err)
		}
		return m.checkAlerts(ctx, f, points, opsKnown)
	}
}

// checkAlerts evaluates each sampled db's rule and records what fired.
func (m *Master) checkAlerts(ctx context.Context, f *metadb.Fence, points []metadb.UsagePoint, opsKnown bool) error {
	rules := map[string]map[int]*metadb.AlertRule{}
	for _, pt := range points {
		rs, ok := rules[pt.Tenant]
		if !ok {
			var err error
			if rs, err = m.store.TenantAlertRules(ctx, pt.Tenant); err != nil {
				return fmt.Errorf("alert rules of %s: %w", pt.Tenant, err)
			}
			rules[pt.Tenant] = rs
		}
		r := rs[pt.Index]
		if r == nil {
			continue
		}
		next, alerts, changed := evaluate(*r, pt, opsKnown)
		if !changed {
			continue
		}
		recorded, err := m.store.FireAlerts(ctx, f, pt.Tenant, pt.Index, *r, next, alerts, m.cfg.Usage.TenantPending)
		if err != nil {
			return fmt.Errorf("fire alerts of %s/%d: %w", pt.Tenant, pt.Index, err)
		}
		if !recorded {
			continue // the rule changed meanwhile: the next sample evaluates it
		}
		for _, a := range alerts {
			m.log.Info().Str("alert", a.ID).Str("tenant", a.Tenant).Int("index", a.Index).Str("metric", a.Metric).
				Float64("value", a.Value).Float64("threshold", a.Threshold).Str("state", a.State).Msg("alert fired")
		}
		if len(alerts) > 0 {
			m.wakeDelivery()
		}
	}
	return nil
}

package master

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/granary-db/granary/internal/defaults"
	"github.com/granary-db/granary/metadb"
)

// Usage history and alerts: the leader samples every serving db each
// Interval (used bytes and ban from the db record, ops/s and connections
// from the proxies' reports), appends the points to metadb under its fence,
// fires an alert on each crossing of a db's thresholds, and delivers the
// alerts to their webhooks with retries.

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
	// Timeout bounds one delivery. Default 2s.
	Timeout time.Duration
}

func (c *UsageConfig) fill() error {
	defaults.Fill(&c.Interval, 10*time.Second)
	defaults.Fill(&c.Keep, 8640)
	defaults.Fill(&c.AlertPoll, 200*time.Millisecond)
	defaults.Fill(&c.RetryBase, time.Second)
	defaults.Fill(&c.RetryMax, time.Minute)
	defaults.Fill(&c.Attempts, 6)
	defaults.Fill(&c.Timeout, 2*time.Second)
	if c.Interval < 0 || c.Keep < 0 || c.AlertPoll < 0 || c.RetryBase < 0 || c.RetryMax < 0 || c.Attempts < 0 || c.Timeout < 0 {
		return errors.New("usage config: negative value")
	}
	return nil
}

// usageStore is what the usage pass needs of metadb.
type usageStore interface {
	AppendUsage(ctx context.Context, f *metadb.Fence, points []metadb.UsagePoint, keep int) error
	TenantAlertRules(ctx context.Context, tenant string) (map[int]*metadb.AlertRule, error)
	FireAlerts(ctx context.Context, f *metadb.Fence, sender, tenant string, index int, prev, next metadb.AlertRule, alerts []*metadb.Alert) (bool, error)
	PendingAlerts(ctx context.Context) ([]*metadb.Alert, error)
	RecordDelivery(ctx context.Context, f *metadb.Fence, a *metadb.Alert) error
}

// The alert metrics.
const (
	metricUsedPct   = "used_pct"
	metricOpsPerSec = "ops_per_sec"
)

// crossing is the alert policy for one threshold: above is whether value
// is at or over it (a threshold of 0 is off, never above); fire is true only
// on the sample that goes above after one that was not.
func crossing(wasAbove bool, value, threshold float64) (above, fire bool) {
	if threshold <= 0 {
		return false, false
	}
	above = value >= threshold
	return above, above && !wasAbove
}

// evaluate applies a rule to a point: the rule with its new crossing state,
// the alerts it fires and whether anything changed. Without opsKnown (some
// proxy has no rate yet, as after a change of leader) the ops threshold
// keeps its state: a partial sum must neither re-arm nor fire it.
func evaluate(r metadb.AlertRule, pt metadb.UsagePoint, opsKnown bool) (metadb.AlertRule, []*metadb.Alert, bool) {
	next := r
	var out []*metadb.Alert
	fire := func(metric string, value, threshold float64) {
		out = append(out, &metadb.Alert{Tenant: pt.Tenant, Index: pt.Index, Metric: metric, Value: value,
			Threshold: threshold, Time: pt.Time, Webhook: r.Webhook})
	}
	var f bool
	usedPct := 0.0
	if pt.QuotaBytes > 0 {
		usedPct = 100 * float64(pt.UsedBytes) / float64(pt.QuotaBytes)
	}
	if next.UsedAbove, f = crossing(r.UsedAbove, usedPct, r.UsedPct); f {
		fire(metricUsedPct, usedPct, r.UsedPct)
	}
	if opsKnown {
		if next.OpsAbove, f = crossing(r.OpsAbove, pt.OpsPerSec, r.OpsPerSec); f {
			fire(metricOpsPerSec, pt.OpsPerSec, r.OpsPerSec)
		}
	}
	return next, out, next != r
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
		var points []metadb.UsagePoint
		for _, db := range dbs {
			if db.State != metadb.DBActive && db.State != metadb.DBResizing {
				continue
			}
			points = append(points, metadb.UsagePoint{Tenant: db.Tenant, Index: db.Index, Time: now,
				UsedBytes: db.UsedBytes, QuotaBytes: db.QuotaBytes, Banned: db.Banned,
				OpsPerSec: ops[db.Tenant+"/"+strconv.Itoa(db.Index)], Connections: conns[db.Tenant]})
		}
		if err := m.store.AppendUsage(ctx, f, points, m.cfg.Usage.Keep); err != nil {
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
		recorded, err := m.store.FireAlerts(ctx, f, m.sender(), pt.Tenant, pt.Index, *r, next, alerts)
		if err != nil {
			return fmt.Errorf("fire alerts of %s/%d: %w", pt.Tenant, pt.Index, err)
		}
		if !recorded {
			continue // the rule changed meanwhile: the next sample evaluates it
		}
		for _, a := range alerts {
			m.log.Info().Str("tenant", a.Tenant).Int("index", a.Index).Str("metric", a.Metric).
				Float64("value", a.Value).Float64("threshold", a.Threshold).Msg("alert fired")
		}
	}
	return nil
}

// webhookClient posts alerts: a short timeout, and redirects are not
// followed (a 3xx is a failed delivery).
func webhookClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// alertPayload is the JSON body POSTed to a webhook.
type alertPayload struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Index     int       `json:"index"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
}

// alertDeliverer is the delivery pass: each call tries every pending alert
// whose next attempt is due once, and records the outcome.
func (m *Master) alertDeliverer() func(context.Context, *metadb.Fence) error {
	client := webhookClient(m.cfg.Usage.Timeout)
	return func(ctx context.Context, f *metadb.Fence) error {
		pending, err := m.store.PendingAlerts(ctx)
		if err != nil {
			return fmt.Errorf("pending alerts: %w", err)
		}
		for _, a := range pending {
			if time.Now().Before(a.NextTry) {
				continue
			}
			err := deliver(ctx, client, a)
			a.Attempts++
			switch {
			case err == nil:
				a.State, a.LastError, a.NextTry = metadb.AlertDelivered, "", time.Time{}
			case a.Attempts >= m.cfg.Usage.Attempts:
				a.State, a.LastError, a.NextTry = metadb.AlertFailed, err.Error(), time.Time{}
			default:
				a.LastError, a.NextTry = err.Error(), time.Now().Add(backoff(m.cfg.Usage.RetryBase, m.cfg.Usage.RetryMax, a.Attempts))
			}
			if err := m.store.RecordDelivery(ctx, f, a); err != nil {
				return fmt.Errorf("record delivery of alert %s: %w", a.ID, err)
			}
			if a.State == metadb.AlertFailed {
				m.log.Warn().Str("alert", a.ID).Str("error", a.LastError).Msg("alert not delivered; giving up")
			}
		}
		return nil
	}
}

// backoff is the wait after the attempts-th failure: base doubled per
// further failure, at most max.
func backoff(base, max time.Duration, attempts int) time.Duration {
	d := base
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// deliver POSTs one alert; any status but 2xx is a failure.
func deliver(ctx context.Context, c *http.Client, a *metadb.Alert) error {
	body, _ := json.Marshal(alertPayload{ID: a.ID, Tenant: a.Tenant, Index: a.Index, Metric: a.Metric,
		Value: a.Value, Threshold: a.Threshold, Time: a.Time})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.Webhook, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

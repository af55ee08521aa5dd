package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage history and alerts. The leading master samples every db at a fixed
// interval (master/usage.go) and appends one UsagePoint per db to a sorted
// set capped in points and age; it evaluates each db's AlertRule on the
// sample and records an Alert for every crossing in the db's bounded alert
// history. Each db and metric has at most one pending (undelivered) alert,
// and each tenant at most a capped number: a newer crossing supersedes the
// pending one, and beyond the tenant's cap an alert is recorded as dropped.
// None of it goes to the audit stream.

// UsagePoint is one sample of one db. ReplLagBytes is the pair's
// replication lag (master offset minus replica offset), -1 when unknown.
type UsagePoint struct {
	Tenant       string    `json:"-"`
	Index        int       `json:"-"`
	Time         time.Time `json:"time"`
	UsedBytes    int64     `json:"used_bytes"`
	QuotaBytes   int64     `json:"quota_bytes"`
	OpsPerSec    float64   `json:"ops_per_sec"`
	Connections  int       `json:"connections"`
	ReplLagBytes int64     `json:"repl_lag_bytes"`
	Banned       bool      `json:"banned"`
}

// AppendUsage appends points (one per db) under the leader fence f and
// trims each db's series to its newest keep points and to those younger
// than maxAge (0: no age bound). A master that no longer leads gets
// ErrNotLeader and appends nothing, so two masters never both append a
// sample.
func (s *Store) AppendUsage(ctx context.Context, f *Fence, points []UsagePoint, keep int, maxAge time.Duration) error {
	if keep < 1 {
		return fmt.Errorf("append usage: keep %d < 1", keep)
	}
	if len(points) == 0 {
		return nil
	}
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, pt := range points {
				b, err := json.Marshal(pt)
				if err != nil {
					return err
				}
				k := keyUsage(pt.Tenant, pt.Index)
				p.ZAdd(ctx, k, redis.Z{Score: float64(pt.Time.UnixMilli()), Member: b})
				p.ZRemRangeByRank(ctx, k, 0, int64(-keep-1))
				if maxAge > 0 {
					p.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(pt.Time.Add(-maxAge).UnixMilli(), 10))
				}
			}
			return nil
		})
		return err
	})
}

// Usage reads a db's points recorded at or after since, oldest first.
func (s *Store) Usage(ctx context.Context, tenant string, index int, since time.Time) ([]UsagePoint, error) {
	min := "-inf"
	if !since.IsZero() {
		min = strconv.FormatInt(since.UnixMilli(), 10)
	}
	vs, err := s.rdb.ZRangeByScore(ctx, keyUsage(tenant, index), &redis.ZRangeBy{Min: min, Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("usage %s/%d: %w", tenant, index, err)
	}
	out := make([]UsagePoint, 0, len(vs))
	for _, v := range vs {
		var pt UsagePoint
		if err := json.Unmarshal([]byte(v), &pt); err != nil {
			return nil, fmt.Errorf("decode usage %s/%d: %w", tenant, index, err)
		}
		pt.Tenant, pt.Index = tenant, index
		out = append(out, pt)
	}
	return out, nil
}

// The alert metrics.
const (
	MetricUsedPct   = "used_pct"
	MetricOpsPerSec = "ops_per_sec"
	MetricReplLag   = "repl_lag_bytes"
)

// AlertMetrics lists every metric an alert rule can watch.
var AlertMetrics = []string{MetricUsedPct, MetricOpsPerSec, MetricReplLag}

// AlertRule is a db's alert thresholds; zero thresholds are off. Secret,
// when set, signs each delivery (HMAC-SHA256 of the body); it is stored
// because signing needs it, and never shown back. Above records, for the
// master, which metrics the last samples left above their thresholds, so an
// alert fires once per crossing.
type AlertRule struct {
	Webhook      string          `json:"webhook"`
	Secret       string          `json:"secret,omitempty"`
	UsedPct      float64         `json:"used_pct"`
	OpsPerSec    float64         `json:"ops_per_sec"`
	ReplLagBytes float64         `json:"repl_lag_bytes"`
	Above        map[string]bool `json:"above,omitempty"`
}

// Threshold is the rule's threshold of metric, 0 when off or unknown.
func (r *AlertRule) Threshold(metric string) float64 {
	switch metric {
	case MetricUsedPct:
		return r.UsedPct
	case MetricOpsPerSec:
		return r.OpsPerSec
	case MetricReplLag:
		return r.ReplLagBytes
	}
	return 0
}

// same reports whether two rules are the same, crossing state included.
func (r *AlertRule) same(o *AlertRule) bool {
	a, _ := json.Marshal(r)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// SetAlertRule replaces a db's rule (and resets its crossing state); the db
// must exist. With keepSecret the stored secret, if any, is kept.
func (s *Store) SetAlertRule(ctx context.Context, tenant string, index int, r AlertRule, keepSecret bool) error {
	r.Above = nil
	return s.txn(ctx, nil, func(tx *redis.Tx) error {
		if _, err := getDB(ctx, tx, tenant, index); err != nil {
			return err
		}
		if keepSecret {
			old, err := hgetJSON[AlertRule](ctx, tx, keyTenantAlerts(tenant), field(index), "alert rule")
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			default:
				r.Secret = old.Secret
			}
		}
		b, _ := json.Marshal(r)
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, keyTenantAlerts(tenant), field(index), b)
			return nil
		})
		return err
	}, keyTenantDBs(tenant), keyTenantAlerts(tenant))
}

// AlertRule loads a db's rule; ErrNotFound when it has none.
func (s *Store) AlertRule(ctx context.Context, tenant string, index int) (*AlertRule, error) {
	return hgetJSON[AlertRule](ctx, s.rdb, keyTenantAlerts(tenant), field(index), fmt.Sprintf("alert rule %s/%d", tenant, index))
}

// TenantAlertRules loads the rules of all a tenant's dbs, by index.
func (s *Store) TenantAlertRules(ctx context.Context, tenant string) (map[int]*AlertRule, error) {
	m, err := s.rdb.HGetAll(ctx, keyTenantAlerts(tenant)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[int]*AlertRule, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil {
			continue
		}
		var r AlertRule
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, fmt.Errorf("decode alert rule %s/%s: %w", tenant, k, err)
		}
		out[i] = &r
	}
	return out, nil
}

// Alert delivery states.
const (
	AlertPending    = "pending"
	AlertDelivered  = "delivered"
	AlertFailed     = "failed"     // attempts used up
	AlertSuperseded = "superseded" // a newer crossing of the same metric took its place
	AlertDropped    = "dropped"    // the tenant had too many pending alerts
	AlertCancelled  = "cancelled"  // the rule went away before delivery
)

// Alert is one fired alert and the state of its delivery. It holds no
// webhook: the delivery reads the rule's current one.
type Alert struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Index     int       `json:"index"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// AlertHistoryKeep caps each db's alert history; older alerts are
// forgotten (a pending one is kept until it is settled).
const AlertHistoryKeep = 50

func pendingField(index int, metric string) string { return field(index) + "/" + metric }

// FireAlerts records next, the new crossing state of a db's rule, and the
// alerts it fired, under the fence; it reports whether it recorded them. It
// records nothing when the stored rule is no longer prev, the one
// evaluated: a PUT meanwhile wins, and the next sample evaluates the new
// rule. A fired alert replaces the pending alert of the same db and metric
// (marked superseded); one that would take the tenant beyond tenantCap
// pending alerts is recorded as dropped.
func (s *Store) FireAlerts(ctx context.Context, f *Fence, tenant string, index int, prev, next AlertRule, alerts []*Alert, tenantCap int) (bool, error) {
	ruleJSON, _ := json.Marshal(next)
	for _, a := range alerts {
		n, err := s.rdb.Incr(ctx, keySeq("alert")).Result()
		if err != nil {
			return false, fmt.Errorf("alert id: %w", err)
		}
		a.ID = strconv.FormatInt(n, 10)
	}
	hist, pend := keyAlertHistory(tenant, index), keyAlertsPending(tenant)
	recorded := false
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		recorded = false
		cur, err := hgetJSON[AlertRule](ctx, tx, keyTenantAlerts(tenant), field(index), "alert rule")
		if errors.Is(err, ErrNotFound) {
			return nil // rule removed meanwhile
		}
		if err != nil {
			return err
		}
		if !cur.same(&prev) {
			return nil // changed meanwhile
		}
		pending, err := tx.HGetAll(ctx, pend).Result()
		if err != nil {
			return err
		}
		var superseded []*Alert
		for _, a := range alerts {
			a.State = AlertPending
			pf := pendingField(index, a.Metric)
			if old, ok := pending[pf]; ok {
				o, err := hgetJSON[Alert](ctx, tx, hist, old, "alert")
				if err == nil {
					o.State, o.NextTry, o.LastError = AlertSuperseded, time.Time{}, "replaced by alert "+a.ID
					superseded = append(superseded, o)
				}
			} else if len(pending) >= tenantCap {
				a.State, a.LastError = AlertDropped, "too many pending alerts for this tenant"
				continue
			}
			pending[pf] = a.ID
		}
		ids, err := tx.HKeys(ctx, hist).Result()
		if err != nil {
			return err
		}
		forget := historyOverflow(ids, len(alerts), pending)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, keyTenantAlerts(tenant), field(index), ruleJSON)
			for _, o := range superseded {
				b, _ := json.Marshal(o)
				p.HSet(ctx, hist, o.ID, b)
			}
			for _, a := range alerts {
				b, _ := json.Marshal(a)
				p.HSet(ctx, hist, a.ID, b)
				if a.State == AlertPending {
					p.HSet(ctx, pend, pendingField(index, a.Metric), a.ID)
					p.SAdd(ctx, keyAlertTenants, tenant)
				}
			}
			if len(forget) > 0 {
				p.HDel(ctx, hist, forget...)
			}
			return nil
		})
		recorded = err == nil
		return err
	}, keyTenantAlerts(tenant), pend, hist)
	return recorded && err == nil, err
}

// historyOverflow picks the oldest ids to forget so that ids plus adding
// new ones fit AlertHistoryKeep; pending ids are never picked.
func historyOverflow(ids []string, adding int, pending map[string]string) []string {
	over := len(ids) + adding - AlertHistoryKeep
	if over <= 0 {
		return nil
	}
	keep := map[string]bool{}
	for _, id := range pending {
		keep[id] = true
	}
	slices.SortFunc(ids, func(a, b string) int { return compareIDs(a, b) })
	var out []string
	for _, id := range ids {
		if len(out) == over {
			break
		}
		if !keep[id] {
			out = append(out, id)
		}
	}
	return out
}

// compareIDs orders numeric alert ids numerically.
func compareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

// PendingAlerts lists every alert whose delivery is not settled: at most
// one per db and metric, and a capped number per tenant.
func (s *Store) PendingAlerts(ctx context.Context) ([]*Alert, error) {
	tenants, err := s.rdb.SMembers(ctx, keyAlertTenants).Result()
	if err != nil {
		return nil, err
	}
	var out []*Alert
	for _, t := range tenants {
		pending, err := s.rdb.HGetAll(ctx, keyAlertsPending(t)).Result()
		if err != nil {
			return nil, err
		}
		for pf, id := range pending {
			i, err := strconv.Atoi(strings.SplitN(pf, "/", 2)[0])
			if err != nil {
				continue
			}
			a, err := hgetJSON[Alert](ctx, s.rdb, keyAlertHistory(t, i), id, "alert")
			if errors.Is(err, ErrNotFound) {
				continue // dropped with its db; RecordDelivery cleans up
			}
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// Alerts lists a db's recorded alerts, oldest first.
func (s *Store) Alerts(ctx context.Context, tenant string, index int) ([]*Alert, error) {
	m, err := s.rdb.HGetAll(ctx, keyAlertHistory(tenant, index)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*Alert, 0, len(m))
	for _, v := range m {
		var a Alert
		if err := json.Unmarshal([]byte(v), &a); err != nil {
			return nil, fmt.Errorf("decode alert of %s/%d: %w", tenant, index, err)
		}
		out = append(out, &a)
	}
	slices.SortFunc(out, func(a, b *Alert) int { return compareIDs(a.ID, b.ID) })
	return out, nil
}

// RecordDelivery stores an alert's delivery state after an attempt, under
// the fence. A settled alert (any state but pending) leaves the pending set
// if it is still the db's pending alert for its metric. An alert that was
// superseded or forgotten meanwhile is not written back.
func (s *Store) RecordDelivery(ctx context.Context, f *Fence, a *Alert) error {
	b, _ := json.Marshal(a)
	hist, pend := keyAlertHistory(a.Tenant, a.Index), keyAlertsPending(a.Tenant)
	pf := pendingField(a.Index, a.Metric)
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		cur, err := tx.HGet(ctx, pend, pf).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		mine := cur == a.ID
		n, err := tx.HLen(ctx, pend).Result()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if mine {
				p.HSet(ctx, hist, a.ID, b)
			}
			if mine && a.State != AlertPending {
				p.HDel(ctx, pend, pf)
				if n <= 1 {
					p.SRem(ctx, keyAlertTenants, a.Tenant)
				}
			}
			return nil
		})
		return err
	}, pend, keyAlertTenants)
}

// MetadbAddrs are the addresses of the metadb's servers, for the guards
// that keep tenant-supplied addresses (imports, webhooks) away from them:
// URL's server; with Sentinels, the Sentinels themselves and the master
// and replicas they know now. A Sentinel that does not answer leaves out
// what only it would have told.
func (s *Store) MetadbAddrs(ctx context.Context) []string {
	if !s.sentinel {
		return []string{s.rdb.Options().Addr}
	}
	out := append([]string(nil), s.cfg.Sentinels...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, a := range s.cfg.Sentinels {
		c := newSentinelClient(a)
		hp, err := c.GetMasterAddrByName(ctx, s.cfg.MasterName).Result()
		var rs []map[string]string
		if err == nil {
			rs, err = c.Replicas(ctx, s.cfg.MasterName).Result()
		}
		_ = c.Close()
		if err != nil || len(hp) != 2 {
			continue
		}
		out = append(out, net.JoinHostPort(hp[0], hp[1]))
		for _, r := range rs {
			out = append(out, net.JoinHostPort(r["ip"], r["port"]))
		}
		break
	}
	return out
}

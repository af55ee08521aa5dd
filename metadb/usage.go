package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Usage history and alerts. The leading master samples every db at a fixed
// interval (master/usage.go) and appends one UsagePoint per db to a capped
// sorted set; it evaluates each db's AlertRule on the sample and records an
// Alert for every crossing, which it then delivers to the rule's webhook.

// UsagePoint is one sample of one db.
type UsagePoint struct {
	Tenant      string    `json:"-"`
	Index       int       `json:"-"`
	Time        time.Time `json:"time"`
	UsedBytes   int64     `json:"used_bytes"`
	QuotaBytes  int64     `json:"quota_bytes"`
	OpsPerSec   float64   `json:"ops_per_sec"`
	Connections int       `json:"connections"`
	Banned      bool      `json:"banned"`
}

// AppendUsage appends points (one per db) under the leader fence f and
// trims each db's series to its newest keep points. A master that no
// longer leads gets ErrNotLeader and appends nothing, so two masters never
// both append a sample.
func (s *Store) AppendUsage(ctx context.Context, f *Fence, points []UsagePoint, keep int) error {
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

// AlertRule is a db's alert thresholds; zero thresholds are off. UsedAbove
// and OpsAbove record, for the master, which thresholds the last sample was
// above, so an alert fires once per crossing.
type AlertRule struct {
	Webhook   string  `json:"webhook"`
	UsedPct   float64 `json:"used_pct"`
	OpsPerSec float64 `json:"ops_per_sec"`
	UsedAbove bool    `json:"used_above,omitempty"`
	OpsAbove  bool    `json:"ops_above,omitempty"`
}

// SetAlertRule replaces a db's rule (and resets its crossing state); the db
// must exist.
func (s *Store) SetAlertRule(ctx context.Context, tenant string, index int, r AlertRule) error {
	r.UsedAbove, r.OpsAbove = false, false
	b, _ := json.Marshal(r)
	return s.txn(ctx, nil, func(tx *redis.Tx) error {
		if _, err := getDB(ctx, tx, tenant, index); err != nil {
			return err
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, keyTenantAlerts(tenant), field(index), b)
			return nil
		})
		return err
	}, keyTenantDBs(tenant))
}

// AlertRule loads a db's rule; ErrNotFound when it has none.
func (s *Store) AlertRule(ctx context.Context, tenant string, index int) (*AlertRule, error) {
	return hgetJSON[AlertRule](ctx, s.rdb, keyTenantAlerts(tenant), field(index), fmt.Sprintf("alert rule %s/%d", tenant, index))
}

// Alert delivery states.
const (
	AlertPending   = "pending"
	AlertDelivered = "delivered"
	AlertFailed    = "failed"
)

// Alert is one fired alert and the state of its delivery.
type Alert struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Index     int       `json:"index"`
	Metric    string    `json:"metric"` // "used_pct" or "ops_per_sec"
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
	Webhook   string    `json:"webhook"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	NextTry   time.Time `json:"next_try,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// alertsKeep caps the recorded alerts; older ones are forgotten.
const alertsKeep = 10_000

// FireAlerts records next, the new crossing state of a db's rule, and the
// alerts it fired (state pending), with an audit entry each, under the
// fence; it reports whether it recorded them. It records nothing when the stored rule is no
// longer prev, the one evaluated: a PUT meanwhile wins, and the next
// sample evaluates the new rule.
func (s *Store) FireAlerts(ctx context.Context, f *Fence, sender, tenant string, index int, prev, next AlertRule, alerts []*Alert) (bool, error) {
	ruleJSON, _ := json.Marshal(next)
	for _, a := range alerts {
		n, err := s.rdb.Incr(ctx, keySeq("alert")).Result()
		if err != nil {
			return false, fmt.Errorf("alert id: %w", err)
		}
		a.ID = strconv.FormatInt(n, 10)
		a.State = AlertPending
	}
	recorded := false
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		recorded = false
		b, err := tx.HGet(ctx, keyTenantAlerts(tenant), field(index)).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil // rule removed meanwhile
		}
		if err != nil {
			return err
		}
		var cur AlertRule
		if err := json.Unmarshal(b, &cur); err != nil || cur != prev {
			return nil // changed meanwhile
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, keyTenantAlerts(tenant), field(index), ruleJSON)
			for _, a := range alerts {
				b, _ := json.Marshal(a)
				p.Set(ctx, keyAlert(a.ID), b, 0)
				p.ZAdd(ctx, keyAlerts, redis.Z{Score: float64(a.Time.UnixMilli()), Member: a.ID})
				p.SAdd(ctx, keyAlertsPending, a.ID)
				s.queueAudit(ctx, p, &AuditEntry{Actor: sender, Action: AuditAlertFire, Target: fmt.Sprintf("%s/%d", tenant, index),
					Tenant: tenant, Result: AuditOK, RequestID: "alert/" + a.ID})
			}
			return nil
		})
		recorded = err == nil
		return err
	}, keyTenantAlerts(tenant))
	return recorded && err == nil, err
}

// PendingAlerts lists the alerts whose delivery is not finished.
func (s *Store) PendingAlerts(ctx context.Context) ([]*Alert, error) {
	ids, err := s.rdb.SMembers(ctx, keyAlertsPending).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyAlert(id)
	}
	return mgetJSON[Alert](ctx, s.rdb, keys)
}

// Alert loads one alert.
func (s *Store) Alert(ctx context.Context, id string) (*Alert, error) {
	as, err := mgetJSON[Alert](ctx, s.rdb, []string{keyAlert(id)})
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, fmt.Errorf("alert %s: %w", id, ErrNotFound)
	}
	return as[0], nil
}

// Alerts lists a db's recorded alerts, oldest first.
func (s *Store) Alerts(ctx context.Context, tenant string, index int) ([]*Alert, error) {
	ids, err := s.rdb.ZRange(ctx, keyAlerts, 0, -1).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyAlert(id)
	}
	all, err := mgetJSON[Alert](ctx, s.rdb, keys)
	if err != nil {
		return nil, err
	}
	var out []*Alert
	for _, a := range all {
		if a.Tenant == tenant && a.Index == index {
			out = append(out, a)
		}
	}
	return out, nil
}

// RecordDelivery stores an alert's delivery state after an attempt, under
// the fence; a finished delivery leaves the pending set, and the oldest
// alerts beyond the cap are forgotten.
func (s *Store) RecordDelivery(ctx context.Context, f *Fence, a *Alert) error {
	b, _ := json.Marshal(a)
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		old, err := tx.ZRange(ctx, keyAlerts, 0, int64(-alertsKeep-1)).Result()
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, keyAlert(a.ID), b, 0)
			if a.State != AlertPending {
				p.SRem(ctx, keyAlertsPending, a.ID)
			}
			for _, id := range old {
				p.ZRem(ctx, keyAlerts, id)
				p.Del(ctx, keyAlert(id))
				p.SRem(ctx, keyAlertsPending, id)
			}
			return nil
		})
		return err
	})
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

package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// Limits are a tenant's limits as the admin set them. They are part of the
// Tenant record, so a proxy's full reload carries them; a zero field means
// the proxy's default (proxy.Config.DefaultMaxConnections and
// DefaultOpsPerSec, whose defaults are the constants below).
type Limits struct {
	// MaxConnections bounds the tenant's authenticated connections to one
	// proxy.
	MaxConnections int64 `json:"max_connections,omitempty"`
	// OpsPerSec bounds the commands per second to each of the tenant's
	// dbs on one proxy (a token bucket with one second's worth of burst).
	OpsPerSec int64 `json:"ops_per_sec,omitempty"`
}

// The defaults the proxy applies to a zero field, and the largest values
// that can be set.
const (
	DefaultMaxConnections = 1000
	DefaultOpsPerSec      = 0 // unlimited
	MaxMaxConnections     = 1_000_000
	MaxOpsPerSec          = 100_000_000
)

// ErrBadLimits: a negative or absurd limit.
var ErrBadLimits = errors.New("bad limits")

// Validate reports a negative limit or one above the largest settable.
func (l Limits) Validate() error {
	switch {
	case l.MaxConnections < 0 || l.MaxConnections > MaxMaxConnections:
		return fmt.Errorf("%w: max_connections must be between 0 (the default) and %d, is %d", ErrBadLimits, MaxMaxConnections, l.MaxConnections)
	case l.OpsPerSec < 0 || l.OpsPerSec > MaxOpsPerSec:
		return fmt.Errorf("%w: ops_per_sec must be between 0 (the default) and %d, is %d", ErrBadLimits, MaxOpsPerSec, l.OpsPerSec)
	}
	return nil
}

// UpdateTenant changes one tenant record through fn under an optimistic
// transaction, retried on conflict. fn may return bus messages: then the
// topology version is bumped and they are published in the same
// transaction. It returns ErrNotFound for an unknown tenant, or fn's error
// (nothing is changed then).
func (s *Store) UpdateTenant(ctx context.Context, sender, name string, fn func(*Tenant) ([]*buspb.Envelope, error)) (*Tenant, error) {
	var out *Tenant
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		t, err := getJSON[Tenant](ctx, tx, keyTenant(name))
		if err != nil {
			return fmt.Errorf("tenant %s: %w", name, err)
		}
		msgs, err := fn(t)
		if err != nil {
			return err
		}
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		queue, err := announce(ctx, tx, sender, msgs)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyTenant(name), b, 0)
			queue(pl)
			return nil
		})
		out = t
		return err
	}, keyTenant(name), keyVersion)
	return out, err
}

// SetLimits replaces a tenant's limits, bumps the version and announces
// them (TenantLimits) in one transaction. It returns ErrBadLimits (and
// changes nothing) for limits that do not Validate, ErrNotFound for an
// unknown tenant.
func (s *Store) SetLimits(ctx context.Context, sender, name string, l Limits) (*Tenant, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return s.UpdateTenant(ctx, sender, name, func(t *Tenant) ([]*buspb.Envelope, error) {
		t.Limits = l
		return []*buspb.Envelope{{Payload: &buspb.Envelope_TenantLimits{TenantLimits: &buspb.TenantLimits{
			Tenant: name, MaxConnections: l.MaxConnections, OpsPerSec: l.OpsPerSec}}}}, nil
	})
}

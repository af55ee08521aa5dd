package metadb

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// HashSecret is how tokens and passwords are stored: SHA-256, hex.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(hash, secret string) bool {
	got := HashSecret(secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(hash)) == 1
}

// CreateTenant stores a new tenant with the hashes of its token and
// password. It returns ErrExists when the name is taken.
func (s *Store) CreateTenant(ctx context.Context, sender, name, token, password string) (*Tenant, error) {
	t := &Tenant{Name: name, TokenHash: HashSecret(token), PasswordHash: HashSecret(password), Created: time.Now().UTC()}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	msg := &buspb.Envelope{Payload: &buspb.Envelope_TenantChanged{TenantChanged: &buspb.TenantChanged{Tenant: name, Change: buspb.Change_CHANGE_CREATED}}}
	top := &topology{sender: sender, msgs: []*buspb.Envelope{msg}}
	err = s.txn(ctx, nil, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, keyTenant(name)).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("tenant %s: %w", name, ErrExists)
		}
		next, payloads, err := top.stamp(ctx, tx)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, keyTenant(name), b, 0)
			p.Set(ctx, keyToken(t.TokenHash), name, 0)
			p.SAdd(ctx, keyTenants, name)
			queueTopology(ctx, p, next, payloads)
			return nil
		})
		return err
	}, keyTenant(name), keyVersion)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Tenant loads one tenant; ErrNotFound if there is none.
func (s *Store) Tenant(ctx context.Context, name string) (*Tenant, error) {
	return getJSON[Tenant](ctx, s.rdb, keyTenant(name))
}

// TenantByToken finds the tenant owning an API token. The lookup goes by
// the token's hash, and the stored hash is compared again in constant time.
func (s *Store) TenantByToken(ctx context.Context, token string) (*Tenant, error) {
	h := HashSecret(token)
	name, err := s.rdb.Get(ctx, keyToken(h)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	t, err := s.Tenant(ctx, name)
	if err != nil {
		return nil, err
	}
	if !SecretMatches(t.TokenHash, token) {
		return nil, ErrNotFound
	}
	return t, nil
}

// Tenants loads every tenant.
func (s *Store) Tenants(ctx context.Context) ([]*Tenant, error) {
	names, err := s.rdb.SMembers(ctx, keyTenants).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = keyTenant(n)
	}
	return mgetJSON[Tenant](ctx, s.rdb, keys)
}

// hgetJSON loads the JSON record in field fld of hash key; ErrNotFound,
// saying what, when the field is absent.
func hgetJSON[T any](ctx context.Context, c redis.Cmdable, key, fld, what string) (*T, error) {
	b, err := c.HGet(ctx, key, fld).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", what, err)
	}
	return &v, nil
}

func getJSON[T any](ctx context.Context, c redis.Cmdable, key string) (*T, error) {
	b, err := c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

func mgetJSON[T any](ctx context.Context, c redis.Cmdable, keys []string) ([]*T, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue // deleted meanwhile
		}
		var rec T
		if err := json.Unmarshal([]byte(str), &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", keys[i], err)
		}
		out = append(out, &rec)
	}
	return out, nil
}

package metadb

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Kind of member: proxies and keepers register the same way.
type Kind int

const (
	KindProxy Kind = iota
	KindKeeper
)

func (k Kind) keys(id string) (set, rec string) {
	if k == KindKeeper {
		return keyKeepers, keyKeeper(id)
	}
	return keyProxies, keyProxy(id)
}

// Heartbeat registers or renews a proxy's or keeper's lease for ttl and
// stores its report. A member whose lease lapses is no longer live; a proxy
// must stop taking writes by then (self-fencing), so the master may treat a
// lapsed lease as an acknowledgement.
func (s *Store) Heartbeat(ctx context.Context, kind Kind, m Member, ttl time.Duration) error {
	if m.ID == "" {
		return fmt.Errorf("heartbeat: empty id")
	}
	exp := time.Now().Add(ttl)
	m.LeaseExpires = exp.UTC()
	m.Reported = time.Now().UTC()
	m.Live = false // derived on read
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	set, rec := kind.keys(m.ID)
	// Confirmed like every transaction: after a metadb failover the master
	// must not see an older lease than the one the member counts on.
	return s.txPipelinedConfirmed(ctx, func(pl redis.Pipeliner) error {
		pl.Set(ctx, rec, b, 0)
		pl.ZAdd(ctx, set, redis.Z{Score: float64(exp.UnixMilli()), Member: m.ID})
		return nil
	})
}

// Deregister removes a member at clean shutdown, so nobody waits for its
// lease to lapse.
func (s *Store) Deregister(ctx context.Context, kind Kind, id string) error {
	set, rec := kind.keys(id)
	_, err := s.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
		pl.ZRem(ctx, set, id)
		pl.Del(ctx, rec)
		return nil
	})
	return err
}

// Members lists the registered proxies or keepers, live or not, by id.
// Members whose lease lapsed more than forget ago are left out.
func (s *Store) Members(ctx context.Context, kind Kind, forget time.Duration) ([]*Member, error) {
	set, _ := kind.keys("")
	nowT := time.Now()
	min := strconv.FormatInt(nowT.Add(-forget).UnixMilli(), 10)
	zs, err := s.rdb.ZRangeByScoreWithScores(ctx, set, &redis.ZRangeBy{Min: min, Max: "+inf"}).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(zs))
	exp := map[string]time.Time{}
	for i, z := range zs {
		id := z.Member.(string)
		_, keys[i] = kind.keys(id)
		exp[id] = time.UnixMilli(int64(z.Score))
	}
	ms, err := mgetJSON[Member](ctx, s.rdb, keys)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		m.LeaseExpires = exp[m.ID].UTC()
		m.Live = exp[m.ID].After(nowT)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, nil
}

// LiveMembers lists only the members whose lease has not lapsed.
func (s *Store) LiveMembers(ctx context.Context, kind Kind) ([]*Member, error) {
	all, err := s.Members(ctx, kind, 0)
	if err != nil {
		return nil, err
	}
	live := all[:0]
	for _, m := range all {
		if m.Live {
			live = append(live, m)
		}
	}
	return live, nil
}

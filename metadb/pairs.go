package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// AddrRegistration says what an address is registered as ("pair p3 master",
// "spare"), or "" if it is unknown to Granary.
func (s *Store) AddrRegistration(ctx context.Context, addr string) (string, error) {
	v, err := s.rdb.HGet(ctx, keyAddrs, addr).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

// PairOption sets a field of a pair AddPair records.
type PairOption func(*Pair)

// WithPersistence records the pair's persistence policy.
func WithPersistence(policy string) PairOption {
	return func(p *Pair) { p.Persistence = policy }
}

// AddPair registers a checked pair and puts its dbs on the pool's free list,
// atomically. It returns ErrExists if either address is already registered.
func (s *Store) AddPair(ctx context.Context, size, master, replica string, dbs []int, opts ...PairOption) (*Pair, error) {
	id, err := s.rdb.Incr(ctx, keySeq("pair")).Result()
	if err != nil {
		return nil, err
	}
	p := &Pair{ID: "p" + strconv.FormatInt(id, 10), Size: size, Master: master, Replica: replica, DBs: dbs, State: PairActive, Created: time.Now().UTC()}
	for _, o := range opts {
		o(p)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	free := make([]any, len(dbs))
	for i, d := range dbs {
		free[i] = d
	}
	err = s.txn(ctx, nil, func(tx *redis.Tx) error {
		for _, a := range []string{master, replica} {
			v, err := tx.HGet(ctx, keyAddrs, a).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			if v != "" {
				return fmt.Errorf("%s is registered as %s: %w", a, v, ErrExists)
			}
		}
		_, err := tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(p.ID), b, 0)
			pl.SAdd(ctx, keyPairs, p.ID)
			pl.SAdd(ctx, keyPool(size), p.ID)
			pl.SAdd(ctx, keyPairFree(p.ID), free...)
			pl.HSet(ctx, keyAddrs, master, "pair "+p.ID+" master", replica, "pair "+p.ID+" replica")
			return nil
		})
		return err
	}, keyAddrs)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// AddSpare registers a spare server. ErrExists if the address is known.
func (s *Store) AddSpare(ctx context.Context, addr string) error {
	return s.txn(ctx, nil, func(tx *redis.Tx) error {
		v, err := tx.HGet(ctx, keyAddrs, addr).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if v != "" {
			return fmt.Errorf("%s is registered as %s: %w", addr, v, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.SAdd(ctx, keySpares, addr)
			pl.HSet(ctx, keyAddrs, addr, "spare")
			return nil
		})
		return err
	}, keyAddrs)
}

// Spares lists the spare servers, sorted.
func (s *Store) Spares(ctx context.Context) ([]string, error) {
	v, err := s.rdb.SMembers(ctx, keySpares).Result()
	sort.Strings(v)
	return v, err
}

// Pair loads one pair; ErrNotFound if there is none.
func (s *Store) Pair(ctx context.Context, id string) (*Pair, error) {
	return getJSON[Pair](ctx, s.rdb, keyPair(id))
}

// Pairs loads the pairs of one size class ("" for all), with their free
// counts, sorted by id.
func (s *Store) Pairs(ctx context.Context, size string) ([]PairView, error) {
	setKey := keyPairs
	if size != "" {
		setKey = keyPool(size)
	}
	ids, err := s.rdb.SMembers(ctx, setKey).Result()
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyPair(id)
	}
	pairs, err := mgetJSON[Pair](ctx, s.rdb, keys)
	if err != nil {
		return nil, err
	}
	counts := make([]*redis.IntCmd, len(pairs))
	_, err = s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, p := range pairs {
			counts[i] = pl.SCard(ctx, keyPairFree(p.ID))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]PairView, len(pairs))
	for i, p := range pairs {
		out[i] = PairView{Pair: *p, Free: int(counts[i].Val())}
	}
	sort.Slice(out, func(i, j int) bool { return pairLess(out[i].ID, out[j].ID) })
	return out, nil
}

// pairLess orders "p2" before "p10".
func pairLess(a, b string) bool {
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// UpdatePair changes one pair through fn under an optimistic transaction,
// retried on conflict. With a fence, only the leading master may change it.
func (s *Store) UpdatePair(ctx context.Context, f *Fence, id string, fn func(*Pair) error) (*Pair, error) {
	var out *Pair
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		p, err := getJSON[Pair](ctx, tx, keyPair(id))
		if err != nil {
			return err
		}
		if err := fn(p); err != nil {
			return err
		}
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(id), b, 0)
			return nil
		})
		out = p
		return err
	}, keyPair(id))
	return out, err
}

// SlotOwners maps each owned db number of a pair to "<tenant>/<index>".
func (s *Store) SlotOwners(ctx context.Context, pair string) (map[string]string, error) {
	return s.rdb.HGetAll(ctx, keyPairOwners(pair)).Result()
}

// FreeSlots lists a pair's free db numbers.
func (s *Store) FreeSlots(ctx context.Context, pair string) ([]int, error) {
	v, err := s.rdb.SMembers(ctx, keyPairFree(pair)).Result()
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(v))
	for _, x := range v {
		n, err := strconv.Atoi(x)
		if err != nil {
			return nil, fmt.Errorf("pair %s free slot %q: %w", pair, x, err)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

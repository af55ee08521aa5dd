package keeper

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// This file builds the mixed dbs the sizing tests and the sizing report
// measure: every Redis type, skewed value sizes, sizes that cross the
// listpack limits (128 entries, 64-byte values) so every encoding appears.
//
//	55% strings   value 10 B – 10 KB, log-uniform (median ~316 B)
//	15% hashes    1–200 fields of 5–200 B, log-uniform
//	10% lists     1–200 elements of 5–200 B
//	10% sets      1–200 members of 5–200 B
//	10% zsets     1–200 members of 5–200 B, random scores

// text is random printable bytes that values are cut from, so values are
// neither compressible nor integer-encoded.
var text = func() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return b
}()

func logUniform(r *rand.Rand, lo, hi float64) int {
	return int(math.Round(lo * math.Pow(hi/lo, r.Float64())))
}

func value(r *rand.Rand, size int) string {
	off := r.IntN(len(text) - size)
	return string(text[off : off+size])
}

// queueKey queues the commands that create key number i of a mixed db.
func queueKey(ctx context.Context, p redis.Pipeliner, seed uint64, i int) {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	key := "obj:" + strconv.Itoa(i)
	kind := r.Float64()
	if kind < 0.55 {
		p.Set(ctx, key, value(r, logUniform(r, 10, 10000)), 0)
		return
	}
	n := logUniform(r, 1, 200)
	elem := func(j int) string { return strconv.Itoa(j) + ":" + value(r, logUniform(r, 5, 200)) }
	switch {
	case kind < 0.70:
		args := make([]any, 0, 2*n)
		for j := 0; j < n; j++ {
			args = append(args, "f"+strconv.Itoa(j), value(r, logUniform(r, 5, 200)))
		}
		p.HSet(ctx, key, args...)
	case kind < 0.80:
		args := make([]any, n)
		for j := range args {
			args[j] = value(r, logUniform(r, 5, 200))
		}
		p.RPush(ctx, key, args...)
	case kind < 0.90:
		args := make([]any, n)
		for j := range args {
			args[j] = elem(j)
		}
		p.SAdd(ctx, key, args...)
	default:
		zs := make([]redis.Z, n)
		for j := range zs {
			zs[j] = redis.Z{Score: r.Float64() * 1000, Member: elem(j)}
		}
		p.ZAdd(ctx, key, zs...)
	}
}

// populate fills db of the server at addr with keys [from, to) of the mixed
// db with this seed, over a few pipelined connections.
func populate(tb testing.TB, addr string, db int, seed uint64, from, to int) {
	tb.Helper()
	ctx := tb.Context()
	const workers, batch = 4, 1000
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db, PoolSize: workers})
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	chunk := (to - from + workers - 1) / workers
	for w := 0; w < workers; w++ {
		lo, hi := from+w*chunk, min(from+(w+1)*chunk, to)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i += batch {
				_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
					for j := i; j < min(i+batch, hi); j++ {
						queueKey(ctx, p, seed, j)
					}
					return nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatalf("populate db %d: %v", db, err)
	}
}

// exactSum is the reference the estimates are judged against: Σ MEMORY
// USAGE key SAMPLES 0 over every key of a full SCAN, pipelined per SCAN
// batch, with keys deduplicated.
func exactSum(ctx context.Context, c *redis.Client, batch int) (sum, keys int64, err error) {
	seen := map[string]struct{}{}
	var cursor uint64
	for {
		ks, next, err := c.Scan(ctx, cursor, "", int64(batch)).Result()
		if err != nil {
			return 0, 0, err
		}
		var fresh []string
		for _, k := range ks {
			if _, dup := seen[k]; !dup {
				seen[k] = struct{}{}
				fresh = append(fresh, k)
			}
		}
		cmds := make([]*redis.IntCmd, len(fresh))
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range fresh {
				cmds[i] = p.MemoryUsage(ctx, k, 0)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return 0, 0, err
		}
		for _, cmd := range cmds {
			if v, err := cmd.Result(); err == nil {
				sum += v
				keys++
			}
		}
		if cursor = next; cursor == 0 {
			return sum, keys, nil
		}
	}
}

package keeper

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// sizing is how a measurement reads a db: the Redis side of estimate.go.
//
// The sample is a run of consecutive SCAN buckets from a random cursor.
// Redis puts a key in a bucket by the low bits of a seeded SipHash of its
// name, so the keys of any run of buckets are a uniform random sample of the
// db, drawn without replacement, and one SCAN call hands over hundreds of
// them: far cheaper than one RANDOMKEY per key (which also favours keys in
// short bucket chains). Every key read costs one pipelined MEMORY USAGE;
// SCAN and the previous batch's MEMORY USAGE calls share a round trip.
type sizing struct {
	// exactKeys: dbs with at most this many keys are summed exactly.
	exactKeys int64
	plan      samplePlan
	// elementSamples is the SAMPLES argument of MEMORY USAGE in sampled
	// passes (exact passes use 0, every element).
	elementSamples int
	// batch is the SCAN COUNT and so the keys per round trip.
	batch int
	// bigKeys and bigKeyFactor choose the certain stratum (see bigKeys).
	bigKeys      int
	bigKeyFactor float64
}

// measurement is one measured db.
type measurement struct {
	Estimate
	// big is the certain stratum for the next measurement of the db.
	big     []string
	elapsed time.Duration
}

// measure measures db number db of the server behind c. With exact, or
// when the db has at most exactKeys keys, it sums MEMORY USAGE … SAMPLES 0
// over a full SCAN; otherwise it measures the certain keys and samples the
// rest from the SCAN cursor start. It holds one connection of c for the
// whole pass and blocks until done or ctx ends. It is the executor of a
// pass (pass.go): the pass decides each round trip and when to stop.
//
// An exact pass does not deduplicate keys, so a SCAN that runs while the
// db's hash table grows or shrinks may count a few keys twice (SCAN's own
// guarantee); sampled passes deduplicate.
func (s sizing) measure(ctx context.Context, c *redis.Client, db int, exact bool, certain []string, start uint64) (measurement, error) {
	t0 := time.Now()
	conn := c.Conn()
	defer conn.Close()
	var dbsize *redis.IntCmd
	if _, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Select(ctx, db)
		dbsize = p.DBSize(ctx)
		return nil
	}); err != nil {
		return measurement{}, fmt.Errorf("select db %d: %w", db, err)
	}
	o := observation{keys: dbsize.Val()}
	exact = exact || o.keys <= s.exactKeys
	samples := s.elementSamples
	if exact {
		samples = 0
	}
	var cands []keySize
	skip := map[string]bool{}
	if !exact && len(certain) > 0 {
		sizes, err := memoryUsage(ctx, conn, certain, samples)
		if err != nil {
			return measurement{}, err
		}
		for i, k := range certain {
			skip[k] = true
			if sizes[i] >= 0 {
				o.certainKeys++
				o.certainBytes += sizes[i]
				cands = append(cands, keySize{k, sizes[i]})
			}
		}
	}

	top := topKeys{k: s.bigKeys}
	var seen map[string]struct{}
	cursor := uint64(0)
	if !exact {
		seen = map[string]struct{}{}
		cursor = start
	}
	p := newPass(o, exact, s.plan)
	var pending []string
	for {
		var trip roundTrip
		if p, trip = p.next(); trip == passDone {
			break
		}
		r, err := s.round(ctx, conn, db, trip == passScan, cursor, pending, samples)
		if err != nil {
			return measurement{}, err
		}
		for i, v := range r.sizes {
			if v >= 0 { // -1: deleted or expired since SCAN saw it
				p.o.sampled.add(v)
				top.offer(pending[i], v)
			}
		}
		pending = nil
		if trip == passScan {
			for _, k := range r.keys {
				if skip[k] {
					continue
				}
				if seen != nil {
					if _, dup := seen[k]; dup {
						continue
					}
					seen[k] = struct{}{}
				}
				pending = append(pending, k)
			}
			cursor = r.next
		}
		p.pending, p.seen = len(pending), int64(len(seen))
		p = p.after(cursor)
	}
	p.o.complete = exact
	m := measurement{Estimate: estimate(p.o), elapsed: time.Since(t0)}
	m.big = bigKeys(append(cands, top.keys...), p.meanKeySize(), s.bigKeyFactor, s.bigKeys)
	return m, nil
}

// roundReply is what one round trip of a pass brought back.
type roundReply struct {
	// sizes are the MEMORY USAGE of the keys sent, -1 for a key that no
	// longer exists.
	sizes []int64
	// keys and next are SCAN's reply, when the round trip had a SCAN.
	keys []string
	next uint64
}

// round sends one round trip of a pass on conn (which has db selected):
// with scan, SCAN from cursor for batch keys; and MEMORY USAGE … SAMPLES
// samples of keys, all in one pipeline.
func (s sizing) round(ctx context.Context, conn *redis.Conn, db int, scan bool, cursor uint64, keys []string, samples int) (roundReply, error) {
	var sc *redis.ScanCmd
	mem := make([]*redis.IntCmd, len(keys))
	_, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		if scan {
			sc = p.Scan(ctx, cursor, "", int64(s.batch))
		}
		for i, k := range keys {
			mem[i] = p.MemoryUsage(ctx, k, samples)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return roundReply{}, fmt.Errorf("scan db %d: %w", db, err)
	}
	var r roundReply
	if r.sizes, err = sizesOf(mem); err != nil {
		return roundReply{}, err
	}
	if scan {
		if r.keys, r.next, err = sc.Result(); err != nil {
			return roundReply{}, fmt.Errorf("scan db %d: %w", db, err)
		}
	}
	return r, nil
}

// memoryUsage reads MEMORY USAGE of keys in one pipeline; -1 for a key
// that does not exist.
func memoryUsage(ctx context.Context, c redis.Cmdable, keys []string, samples int) ([]int64, error) {
	cmds := make([]*redis.IntCmd, len(keys))
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.MemoryUsage(ctx, k, samples)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("memory usage: %w", err)
	}
	return sizesOf(cmds)
}

// sizesOf reads the replies of pipelined MEMORY USAGE calls; -1 for a key
// that does not exist.
func sizesOf(cmds []*redis.IntCmd) ([]int64, error) {
	out := make([]int64, len(cmds))
	for i, cmd := range cmds {
		v, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
			out[i] = -1
		case err != nil:
			return nil, fmt.Errorf("memory usage: %w", err)
		default:
			out[i] = v
		}
	}
	return out, nil
}

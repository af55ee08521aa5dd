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
// whole pass and blocks until done or ctx ends.
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
	target := int64(-1) // sampled passes: decided after the pilot
	scanning := o.keys > 0
	wraps := 0
	var pending []string
	for {
		if !exact && target >= 0 {
			if o.sampled.n >= target {
				break // keys scanned but not yet read are simply not in the sample
			}
			if o.sampled.n+int64(len(pending)) >= target {
				scanning = false
			}
		}
		if !scanning && len(pending) == 0 {
			break
		}
		var scan *redis.ScanCmd
		var mem []*redis.IntCmd
		_, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			if scanning {
				scan = p.Scan(ctx, cursor, "", int64(s.batch))
			}
			for _, k := range pending {
				mem = append(mem, p.MemoryUsage(ctx, k, samples))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return measurement{}, fmt.Errorf("scan db %d: %w", db, err)
		}
		for i, cmd := range mem {
			v, err := cmd.Result()
			if errors.Is(err, redis.Nil) {
				continue // deleted or expired since SCAN saw it
			}
			if err != nil {
				return measurement{}, fmt.Errorf("memory usage: %w", err)
			}
			o.sampled.add(v)
			top.offer(pending[i], v)
		}
		pending = nil
		if scanning {
			keys, next, err := scan.Result()
			if err != nil {
				return measurement{}, fmt.Errorf("scan db %d: %w", db, err)
			}
			for _, k := range keys {
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
			cursor = next
			if next == 0 {
				// The end of the table. A sampled pass started midway goes on
				// from the beginning; it has seen every key once it has
				// wrapped twice.
				wraps++
				if exact || wraps > 1 {
					scanning = false
				}
			}
			if seen != nil && int64(len(seen)) >= o.sampledPopulation() {
				scanning = false
			}
		}
		if !exact && target < 0 && (o.sampled.n >= s.plan.pilot || !scanning) {
			target = sampleTarget(o, s.plan)
		}
	}
	o.complete = exact
	m := measurement{Estimate: estimate(o), elapsed: time.Since(t0)}
	mean := o.sampled.mean
	if exact && o.sampled.n > 0 {
		mean = float64(o.sampled.sum) / float64(o.sampled.n)
	}
	m.big = bigKeys(append(cands, top.keys...), mean, s.bigKeyFactor, s.bigKeys)
	return m, nil
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
	out := make([]int64, len(keys))
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

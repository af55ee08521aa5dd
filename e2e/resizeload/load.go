// Package resizeload is the client workload of the resize test and
// benchmark: a bulk fill, then paced confirmed writes, each read back at
// once, with the errors, stale reads and longest stall recorded, and a final
// check that every acknowledged write is there.
package resizeload

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fill writes keys "fill:<i>" of valueSize bytes until about bytes are
// written, pipelined, straight to c (a backend slot or the proxy). It
// returns the number of keys.
func Fill(ctx context.Context, c redis.Cmdable, bytes int64, valueSize int) (int, error) {
	n := int(bytes / int64(valueSize+64)) // +64: Redis's per-key overhead, roughly
	val := make([]byte, valueSize)
	for i := range val {
		val[i] = byte('a' + i%26)
	}
	const batch = 500
	for i := 0; i < n; i += batch {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+batch, n); j++ {
				p.Set(ctx, "fill:"+strconv.Itoa(j), val, 0)
			}
			return nil
		})
		if err != nil {
			return i, fmt.Errorf("fill: %w", err)
		}
	}
	return n, nil
}

// Writer drives paced writes through a client and reads each one back.
type Writer struct {
	Clients int           // concurrent writers
	Rate    int           // writes per second, all writers together
	Keys    int           // keys per writer: keys are overwritten in turn
	Timeout time.Duration // a write or read slower than this is an error

	writes, errors, stale atomic.Int64
	mu                    sync.Mutex
	maxStall              time.Duration
	stallAt               time.Time
	firstErr              error
	last                  []map[string]int64 // per writer: key -> last acknowledged value
	slow                  []span             // writes slower than 2ms
	all                   []span             // every acknowledged write, for LatencyIn
}

type span struct {
	start time.Time
	took  time.Duration
}

// Stats is what a Writer saw.
type Stats struct {
	Writes, Errors, Stale int64
	MaxStall              time.Duration // the longest write (SET, acknowledged)
	MaxStallAt            time.Time
	FirstErr              error
}

// Run writes until ctx ends. Every write is "SET w:<writer>:<n mod Keys>
// <n>", then a GET of the same key through the same connection must
// answer <n>.
func (w *Writer) Run(ctx context.Context, c *redis.Client) {
	w.last = make([]map[string]int64, w.Clients)
	var wg sync.WaitGroup
	every := time.Duration(int64(time.Second) * int64(w.Clients) / int64(w.Rate))
	for g := 0; g < w.Clients; g++ {
		w.last[g] = map[string]int64{}
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			// Paced by a schedule, not a ticker: a slow write is followed
			// by the ones it delayed, so the rate holds when latency
			// varies.
			next := time.Now().Add(every * time.Duration(g) / time.Duration(w.Clients))
			t := time.NewTimer(time.Until(next))
			defer t.Stop()
			for n := int64(0); ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				next = next.Add(every)
				t.Reset(time.Until(next))
				key := "w:" + strconv.Itoa(g) + ":" + strconv.FormatInt(n%int64(w.Keys), 10)
				start := time.Now()
				wctx, cancel := context.WithTimeout(context.Background(), w.Timeout)
				err := c.Set(wctx, key, n, 0).Err()
				took := time.Since(start)
				if err == nil {
					var got string
					got, err = c.Get(wctx, key).Result()
					if err == nil && got != strconv.FormatInt(n, 10) {
						w.stale.Add(1)
					}
				}
				cancel()
				w.record(g, key, n, took, start, err)
			}
		}(g)
	}
	wg.Wait()
}

func (w *Writer) record(g int, key string, n int64, took time.Duration, at time.Time, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.errors.Add(1)
		if w.firstErr == nil {
			w.firstErr = fmt.Errorf("%s: %w", key, err)
		}
		return
	}
	w.writes.Add(1)
	w.last[g][key] = n
	if took > w.maxStall {
		w.maxStall, w.stallAt = took, at
	}
	if took > 2*time.Millisecond {
		w.slow = append(w.slow, span{at, took})
	}
	w.all = append(w.all, span{at, took})
}

// MaxStallIn is the longest acknowledged write that was in flight at some
// moment between from and to.
func (w *Writer) MaxStallIn(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m time.Duration
	for _, s := range w.slow {
		if s.start.Before(to) && s.start.Add(s.took).After(from) && s.took > m {
			m = s.took
		}
	}
	return m
}

// LatencyIn is the 99th percentile and the longest of the acknowledged
// writes in flight at some moment between from and to, and their count.
func (w *Writer) LatencyIn(from, to time.Time) (p99, longest time.Duration, n int) {
	w.mu.Lock()
	var in []time.Duration
	for _, s := range w.all {
		if s.start.Before(to) && s.start.Add(s.took).After(from) {
			in = append(in, s.took)
		}
	}
	w.mu.Unlock()
	if len(in) == 0 {
		return 0, 0, 0
	}
	slices.Sort(in)
	return in[(len(in)*99)/100], in[len(in)-1], len(in)
}

// Written is how many distinct keys got an acknowledged write.
func (w *Writer) Written() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.last {
		n += len(m)
	}
	return n
}

// Stats returns the counts so far.
func (w *Writer) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Stats{Writes: w.writes.Load(), Errors: w.errors.Load(), Stale: w.stale.Load(),
		MaxStall: w.maxStall, MaxStallAt: w.stallAt, FirstErr: w.firstErr}
}

// Lost reads back every key's last acknowledged value through c and counts
// those missing or older. Call it after Run returned.
func (w *Writer) Lost(ctx context.Context, c *redis.Client) (lost int, err error) {
	for _, m := range w.last {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		for i := 0; i < len(keys); i += 500 {
			part := keys[i:min(i+500, len(keys))]
			vals, err := c.MGet(ctx, part...).Result()
			if err != nil {
				return lost, err
			}
			for j, v := range vals {
				if s, _ := v.(string); s != strconv.FormatInt(m[part[j]], 10) {
					lost++
				}
			}
		}
	}
	return lost, nil
}

// Package failoverload is the client load of the failover test and the
// failover benchmark: clients doing confirmed writes in a loop that
// remember every acknowledged one, so that the writes a failover lost can
// be counted, and that time, after each kill, how long until writes are
// acknowledged again.
package failoverload

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// WriteFunc sends one confirmed write of value to key and returns nil when
// it was acknowledged.
type WriteFunc func(ctx context.Context, key, value string) error

// retryPause is how long a client waits after a failed write before the
// next one, so that an outage is not a busy loop.
const retryPause = 5 * time.Millisecond

// Writers runs one client per WriteFunc. Client i writes
// w<i>:<seq mod keySpace> = seq (w<i>:<seq> when keySpace is 0), seq
// counting up, one write at a time, so a key's value only grows: an
// acknowledged write is lost when its key ends up holding a smaller seq,
// or nothing.
type Writers struct {
	mu     sync.Mutex
	acked  map[string]int // key -> highest acknowledged seq
	n      int            // acknowledged writes
	killAt time.Time      // set by MarkKill
	backAt time.Time      // first acknowledged write sent after killAt
	fails  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start starts the clients; they write until ctx ends or Halt is called.
// keySpace bounds the keys each client cycles through (0: a new key for
// every write): a bounded data set keeps the full sync of a new replica
// equally cheap in every round, whatever the write rate.
func Start(ctx context.Context, keySpace int, fns ...WriteFunc) *Writers {
	ctx, cancel := context.WithCancel(ctx)
	w := &Writers{acked: map[string]int{}, cancel: cancel}
	for i, fn := range fns {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			prefix := "w" + strconv.Itoa(i) + ":"
			for seq := 0; ctx.Err() == nil; seq++ {
				k := seq
				if keySpace > 0 {
					k = seq % keySpace
				}
				key := prefix + strconv.Itoa(k)
				start := time.Now()
				if err := fn(ctx, key, strconv.Itoa(seq)); err != nil {
					w.fails.Add(1)
					select {
					case <-ctx.Done():
					case <-time.After(retryPause):
					}
					continue
				}
				w.mu.Lock()
				w.acked[key] = seq
				w.n++
				if !w.killAt.IsZero() && start.After(w.killAt) && w.backAt.IsZero() {
					w.backAt = time.Now()
				}
				w.mu.Unlock()
			}
		}()
	}
	return w
}

// Count is how many writes have been acknowledged so far.
func (w *Writers) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// Fails is how many writes failed (not acknowledged) so far.
func (w *Writers) Fails() int64 { return w.fails.Load() }

// Flowing waits until a write is acknowledged after the call. It returns
// an error if none is within timeout, or ctx ends first.
func (w *Writers) Flowing(ctx context.Context, timeout time.Duration) error {
	n := w.Count()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for w.Count() <= n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("no write acknowledged within %v: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// MarkKill records the time of a kill, now, and returns it; Back then
// reports the first acknowledged write sent after it.
func (w *Writers) MarkKill() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.killAt, w.backAt = time.Now(), time.Time{}
	return w.killAt
}

// Back is when the first write sent after the last MarkKill was
// acknowledged, or the zero time if none has been yet.
func (w *Writers) Back() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.backAt
}

// Halt stops the clients, waits for their last writes, and returns the
// number of acknowledged writes and each key's highest acknowledged seq.
func (w *Writers) Halt() (int, map[string]int) {
	w.cancel()
	w.wg.Wait()
	return w.n, w.acked
}

// Lost counts the keys of acked that c (the final master's db) holds with
// a smaller seq than the highest acknowledged, or not at all: each stands
// for at least one lost acknowledged write.
func Lost(ctx context.Context, c redis.Cmdable, acked map[string]int) (int, error) {
	keys := make([]string, 0, len(acked))
	for k := range acked {
		keys = append(keys, k)
	}
	lost := 0
	for i := 0; i < len(keys); i += 500 {
		batch := keys[i:min(i+500, len(keys))]
		vals, err := c.MGet(ctx, batch...).Result()
		if err != nil {
			return 0, err
		}
		for j, v := range vals {
			s, _ := v.(string)
			if n, err := strconv.Atoi(s); err != nil || n < acked[batch[j]] {
				lost++
			}
		}
	}
	return lost, nil
}

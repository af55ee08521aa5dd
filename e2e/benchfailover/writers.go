package main

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// writeFunc sends one confirmed write and reports whether it was
// acknowledged (nil error).
type writeFunc func(ctx context.Context, key, value string) error

// keySpace is how many keys each client cycles through. Bounding the data
// set keeps the full sync of a new replica equally cheap in every round and
// for both systems, whatever their write rates.
const keySpace = 5000

// writers runs confirmed-write clients in a loop. Client i writes
// w<i>:<seq mod keySpace> = seq with seq counting up, one write at a time,
// so a key's value only grows: an acknowledged write is lost exactly when
// its key ends up holding a smaller seq (or nothing). It measures, per kill,
// how long until the first acknowledged write sent after the kill.
type writers struct {
	mu     sync.Mutex
	acked  map[string]int // key -> highest acknowledged seq
	n      int            // acknowledged writes
	killAt time.Time
	backAt time.Time
	fails  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startWriters(fns []writeFunc) *writers {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writers{acked: map[string]int{}, cancel: cancel}
	for i, fn := range fns {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				key := "w" + strconv.Itoa(i) + ":" + strconv.Itoa(seq%keySpace)
				start := time.Now()
				if err := fn(ctx, key, strconv.Itoa(seq)); err != nil {
					w.fails.Add(1)
					time.Sleep(5 * time.Millisecond)
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

func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// flowing waits until acknowledged writes are being made.
func (w *writers) flowing(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		n := w.count()
		time.Sleep(50 * time.Millisecond)
		if w.count() > n {
			return true
		}
	}
	return false
}

func (w *writers) markKill() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.killAt, w.backAt = time.Now(), time.Time{}
	return w.killAt
}

func (w *writers) back() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.backAt
}

// halt stops the clients and returns the acknowledged writes' count and
// each key's highest acknowledged seq.
func (w *writers) halt() (int, map[string]int) {
	w.cancel()
	w.wg.Wait()
	return w.n, w.acked
}

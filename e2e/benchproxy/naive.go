package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"
)

// runNaive measures the naive confirmation that Granary's batched check is
// compared with: for every SET, `INFO replication` on the master before
// and after the write, then `INFO replication` on the replica until its
// slave_repl_offset reaches the master_repl_offset read after the write.
// clients goroutines, each with its own connections, run for dur.
//
// The replica's own INFO is polled because the master's view of replica
// offsets (slave0:…,offset=) only moves on the replica's REPLCONF ACK,
// once a second unless someone sends WAIT: polling the master would make
// this scheme ~1 s per write, a straw man rather than a baseline.
func runNaive(ctx context.Context, master, replica string, clients int, dur time.Duration) sample {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu   sync.Mutex
		lats []time.Duration
		ferr error
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if ferr == nil {
			ferr = err
		}
		mu.Unlock()
		cancel()
	}
	start := time.Now()
	end := start.Add(dur)
	for g := 0; g < clients; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := dialRESP(ctx, master)
			if err != nil {
				fail(err)
				return
			}
			defer m.Close()
			r, err := dialRESP(ctx, replica)
			if err != nil {
				fail(err)
				return
			}
			defer r.Close()
			key := "naive:" + strconv.Itoa(g)
			mine := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil && time.Now().Before(end) {
				t0 := time.Now()
				if err := naiveSet(m, r, key); err != nil {
					fail(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if ferr != nil {
		return failed(fmt.Errorf("naive: %w", ferr))
	}
	if len(lats) == 0 {
		return failed(fmt.Errorf("naive: no write completed in %v", dur))
	}
	slices.Sort(lats)
	ms := func(q float64) float64 {
		return float64(lats[int(q*float64(len(lats)-1))]) / float64(time.Millisecond)
	}
	return sample{rps: float64(len(lats)) / elapsed.Seconds(), p50: ms(0.50), p99: ms(0.99),
		cpu: math.NaN(), rcpu: math.NaN(), lcpu: math.NaN(), perRead: math.NaN(), requests: len(lats)}
}

// naiveSet is one confirmed write the naive way; it gives up after 5s.
func naiveSet(m, r *respConn, key string) error {
	before, err := m.str("INFO", "replication")
	if err != nil {
		return err
	}
	if _, err := infoInt(before, "master_repl_offset"); err != nil {
		return err
	}
	if _, err := m.do("SET", key, "xxx"); err != nil {
		return err
	}
	after, err := m.str("INFO", "replication")
	if err != nil {
		return err
	}
	want, err := infoInt(after, "master_repl_offset")
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := r.str("INFO", "replication")
		if err != nil {
			return err
		}
		got, err := infoInt(info, "slave_repl_offset")
		if err != nil {
			return err
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica offset %d did not reach %d within 5s", got, want)
		}
	}
}

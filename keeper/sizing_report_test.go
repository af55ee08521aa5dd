//go:build sizingreport

package keeper

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestSizingReport is the sizing benchmark, not a timed test: it is built
// only with the sizingreport tag (make bench-sizing; see docs/sizing.md). It grows one mixed db
// (mixdata_test.go) to 1k, 100k and 1M keys (GRANARY_SIZING_KEYS overrides,
// e.g. "1000,100000") and prints for each size the exact sum of MEMORY
// USAGE … SAMPLES 0, the time of that exact sum, and the error and cost of
// the keeper's sampled estimate with the default config, over several runs.
//
// Two exact timings are printed: "reference" (SCAN, then one pipeline of
// MEMORY USAGE per batch, deduplicated: the obvious implementation) and
// "keeper" (the keeper's own exact pass: SCAN overlapped with the previous
// batch's MEMORY USAGE in one round trip). Cost is the estimate's time over
// the faster of the two, in wall time and in Redis CPU (the usec of INFO
// commandstats), so the better exact pass is the yardstick.
func TestSizingReport(t *testing.T) {
	sizes := []int{1000, 100000, 1000000}
	if v := os.Getenv("GRANARY_SIZING_KEYS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatalf("GRANARY_SIZING_KEYS=%q: %v", v, err)
			}
			sizes = append(sizes, n)
		}
	}
	runs := 5
	s := redistest.Start(t)
	ctx := t.Context()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, ReadTimeout: time.Minute})
	t.Cleanup(func() { c.Close() })
	cfg := DefaultConfig()
	sz := cfg.sizing()

	var out strings.Builder
	fmt.Fprintf(&out, "\nsizing report: redis %s, defaults (exact ≤ %d keys, pilot %d, max %d, target ±%.0f%%, SAMPLES %d)\n",
		redisVersion(ctx, c), cfg.ExactKeys, cfg.SampleKeys, cfg.MaxSampleKeys, 100*cfg.TargetError, cfg.ElementSamples)
	fmt.Fprintf(&out, "%9s %14s %10s %10s %10s | %14s %9s %8s %9s %8s %9s %9s\n",
		"keys", "exact bytes", "ref time", "keeper", "cpu", "estimate", "±95%", "error", "measured", "time", "cost", "cpu cost")
	have := 0
	for _, n := range sizes {
		t0 := time.Now()
		populate(t, s.Addr, 0, 42, have, n)
		have = n
		t.Logf("populated %d keys in %v", n, time.Since(t0))

		var ref int64
		refTime := timed(func() {
			var keys int64
			var err error
			if ref, keys, err = exactSum(ctx, c, sz.batch); err != nil {
				t.Fatal(err)
			}
			if keys != int64(n) {
				t.Fatalf("got %d keys, want %d", keys, n)
			}
		})
		var exact measurement
		exactCPU := serverCPU(t, ctx, c, func() {
			var err error
			if exact, err = sz.measure(ctx, c, 0, true, nil, 0); err != nil {
				t.Fatal(err)
			}
		})
		if exact.Bytes != ref {
			t.Fatalf("keeper exact pass %d, reference %d", exact.Bytes, ref)
		}
		best := min(refTime, exact.elapsed)
		for run := 0; run < runs; run++ {
			var m measurement
			cpu := serverCPU(t, ctx, c, func() {
				var err error
				if m, err = sz.measure(ctx, c, 0, false, nil, rand.Uint64()); err != nil {
					t.Fatal(err)
				}
			})
			e := relErr(m.Bytes, ref)
			fmt.Fprintf(&out, "%9d %14d %10s %10s %10s | %14d %8.2f%% %+7.2f%% %9d %8s %8.2f%% %8.2f%%\n",
				n, ref, round(refTime), round(exact.elapsed), round(exactCPU),
				m.Bytes, 100*float64(m.ErrorBytes)/float64(max(m.Bytes, 1)), 100*e, m.Measured, round(m.elapsed),
				100*float64(m.elapsed)/float64(best), 100*float64(cpu)/float64(exactCPU))
			if math.Abs(e) > 0.05 {
				t.Errorf("%d keys, run %d: error %+.2f%% beyond ±5%%", n, run, 100*e)
			}
		}
	}
	t.Log(out.String())
}

func timed(f func()) time.Duration {
	t0 := time.Now()
	f()
	return time.Since(t0)
}

func round(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// serverCPU runs f and returns the Redis CPU time it cost: the growth of
// the usec counters of INFO commandstats.
func serverCPU(t *testing.T, ctx context.Context, c *redis.Client, f func()) time.Duration {
	t.Helper()
	before := commandUsec(t, ctx, c)
	f()
	return time.Duration(commandUsec(t, ctx, c)-before) * time.Microsecond
}

func commandUsec(t *testing.T, ctx context.Context, c *redis.Client) int64 {
	t.Helper()
	s, err := c.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(s, "\n") {
		_, stats, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") || strings.HasPrefix(line, "cmdstat_info:") {
			continue
		}
		for _, kv := range strings.Split(stats, ",") {
			if v, ok := strings.CutPrefix(kv, "usec="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				total += n
			}
		}
	}
	return total
}

func redisVersion(ctx context.Context, c *redis.Client) string {
	s, _ := c.Info(ctx, "server").Result()
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "?"
}

package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is one place redis-benchmark (or the naive client) sends to.
type target struct {
	name       string
	addr       string
	db         int    // --dbnum; 0 sends no SELECT
	user, pass string // AUTH user pass when user is set
	pid        int    // process whose CPU each run is charged to; 0 none
	redis      []int  // the pair's Redis servers, whose CPU is charged too
	// The Redis server that serves this target's GETs and the one that
	// serves its SETs: their INFO stats tell how many requests Redis took
	// in per read.
	reads, writes string
}

// sample is one run: throughput, latency percentiles (ms), the CPU the
// target's proxy process, the pair's Redis servers and redis-benchmark
// itself spent per request (µs), and how many requests the serving Redis
// took in per read of its sockets (NaN when not measured). A failed run is
// all NaN with err set.
type sample struct {
	rps, p50, p99 float64
	cpu, rcpu     float64
	lcpu          float64 // redis-benchmark
	perRead       float64 // requests per read (total_reads_processed) of the serving Redis
	requests      int
	warn          string // redis-benchmark's WARNING lines, if any
	err           error
}

func failed(err error) sample {
	nan := math.NaN()
	return sample{rps: nan, p50: nan, p99: nan, cpu: nan, rcpu: nan, lcpu: nan, perRead: nan, err: err}
}

// runBench runs redis-benchmark once for one test (SET or GET) and parses
// its CSV. It charges the target's CPU ticks (before/after) to the run.
func runBench(ctx context.Context, t target, test string, pipe, clients, n int, tick time.Duration) sample {
	args := []string{"-h", hostOf(t.addr), "-p", portOf(t.addr), "-c", strconv.Itoa(clients),
		"-n", strconv.Itoa(n), "-P", strconv.Itoa(pipe), "-t", strings.ToLower(test), "--csv"}
	if t.user != "" {
		args = append(args, "--user", t.user, "-a", t.pass)
	}
	if t.db != 0 {
		args = append(args, "--dbnum", strconv.Itoa(t.db))
	}
	cmd := exec.CommandContext(ctx, "redis-benchmark", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb

	// INFO first, so that its own cost to Redis stays out of the run.
	serving := t.reads
	if test == "SET" {
		serving = t.writes
	}
	readsBefore, readsErr := readsProcessed(ctx, serving)
	var before int64
	if t.pid != 0 {
		before, _ = cpuTicks(t.pid)
	}
	rbefore, rerr := sumTicks(t.redis)
	if err := cmd.Run(); err != nil {
		return failed(fmt.Errorf("redis-benchmark %s %s -P %d: %v: %s", t.name, test, pipe, err,
			lastLines(errb.String()+out.String(), 4)))
	}
	s, err := parseCSV(out.Bytes(), test)
	if err != nil {
		return failed(fmt.Errorf("%s %s -P %d: %w (stderr: %s)", t.name, test, pipe, err, lastLines(errb.String(), 4)))
	}
	s.requests = n
	for _, l := range strings.Split(errb.String(), "\n") {
		if strings.Contains(l, "WARNING") {
			s.warn = strings.TrimSpace(l)
		}
	}
	perReq := func(ticks int64) float64 {
		return float64(time.Duration(ticks)*tick) / float64(time.Microsecond) / float64(n)
	}
	s.cpu, s.rcpu = math.NaN(), math.NaN()
	if t.pid != 0 {
		if after, err := cpuTicks(t.pid); err == nil {
			s.cpu = perReq(after - before)
		}
	}
	if rafter, err := sumTicks(t.redis); err == nil && rerr == nil && len(t.redis) > 0 {
		s.rcpu = perReq(rafter - rbefore)
	}
	s.lcpu, s.perRead = math.NaN(), math.NaN()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		used := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		s.lcpu = float64(used) / float64(time.Microsecond) / float64(n)
	}
	if after, err := readsProcessed(ctx, serving); err == nil && readsErr == nil && after > readsBefore {
		s.perRead = float64(n) / float64(after-readsBefore)
	}
	return s
}

// readsProcessed is the total_reads_processed of INFO stats of the Redis
// at addr: how many times it has read from its sockets.
func readsProcessed(ctx context.Context, addr string) (int64, error) {
	if addr == "" {
		return 0, fmt.Errorf("no address")
	}
	c, err := dialRESP(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	info, err := c.str("INFO", "stats")
	if err != nil {
		return 0, err
	}
	return infoInt(info, "total_reads_processed")
}

// sumTicks is the CPU ticks of all of pids.
func sumTicks(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

// parseCSV reads redis-benchmark's --csv output (Redis 7: "test","rps",
// "avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
// "p99_latency_ms","max_latency_ms") and returns the row of test.
func parseCSV(b []byte, test string) (sample, error) {
	rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		return sample{}, fmt.Errorf("csv: %w", err)
	}
	col := map[string]int{}
	for _, row := range rows {
		if len(row) > 0 && row[0] == "test" {
			for i, h := range row {
				col[h] = i
			}
			continue
		}
		if len(row) == 0 || !strings.EqualFold(row[0], test) {
			continue
		}
		get := func(name string) (float64, error) {
			i, ok := col[name]
			if !ok || i >= len(row) {
				return 0, fmt.Errorf("csv has no column %q (redis-benchmark older than 7?)", name)
			}
			return strconv.ParseFloat(row[i], 64)
		}
		var s sample
		if s.rps, err = get("rps"); err != nil {
			return s, err
		}
		if s.p50, err = get("p50_latency_ms"); err != nil {
			return s, err
		}
		if s.p99, err = get("p99_latency_ms"); err != nil {
			return s, err
		}
		return s, nil
	}
	return sample{}, fmt.Errorf("no %s row in %q", test, lastLines(string(b), 3))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func hostOf(addr string) string { h, _, _ := net.SplitHostPort(addr); return h }
func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

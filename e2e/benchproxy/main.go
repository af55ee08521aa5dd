// Command benchproxy measures Granary's proxy against twemproxy and against
// the Redis it fronts (issue 3, "Performance"). Run it as
//
//	go run ./e2e/benchproxy [--rounds 6] [--seconds 3]
//
// or through scripts/bench-proxy.sh, which installs what is missing and
// builds bin/granary first.
//
// It starts a whole cluster of real processes, each in its own process
// group and all stopped at exit (also on SIGINT): a metadb, a pair (master
// and replica, maxmemory 2gb, 16 databases), `granary master`, `granary api`,
// `granary proxy --gomaxprocs 1`, and nutcracker in front of the pair master
// (-v 4, preconnect). Over REST it signs up a tenant and creates two 64M
// dbs, one left in the default confirmed write mode and one switched to
// async, and waits until both answer through the proxy with the tenant's
// credentials.
//
// Then, round after round, it runs redis-benchmark (50 clients, SET and
// GET, pipeline 1 and 16) against each target in turn: (a) the pair master
// directly, (b) twemproxy, (c) the async db and (d) the confirmed db
// through Granary (SET only: its reads are the async db's), plus (e) a
// naive confirmed SET done by this program, which brackets every write
// with INFO replication (see runNaive). Configurations are interleaved and
// the order of targets rotates every round, and runs backwards every second
// round (see order), so slow drift of a shared machine spreads over all
// targets and no target always follows the same one. Each run's request
// count follows the throughput seen so far (a pilot run first), so that it
// lasts about --seconds; the naive client runs for --seconds.
//
// It prints, per target, test and pipeline, the medians over the rounds of
// throughput, p50 and p99 (from redis-benchmark's CSV), of the CPU time per
// request of the proxy and of the pair's Redis servers (utime+stime from
// /proc, before and after each run, divided by the requests) and of
// redis-benchmark itself (its rusage), and of how many requests the Redis
// serving the run took in per read (INFO stats total_reads_processed);
// then the ratios (the median of per-round ratios) with their
// targets, PASS or MISS.
//
// With --pin the load (redis-benchmark and the naive client) runs on CPU 0
// and every server on CPU 1. Left to the kernel, three busy processes
// (redis-benchmark, the proxy, Redis) move between the two cores all the
// time, and a run's throughput depends on how they happened to share them.
//
// With --clusters N the whole cluster is started N times, --rounds rounds
// against each, and the medians are taken over all of them. Some of what
// makes a run fast or slow lasts for the whole cluster (in one run
// twemproxy spent 15 % less CPU per request than in four others, in every
// round), so more rounds against one cluster do not average it out.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	rounds       int
	seconds      float64
	clients      int
	bin          string
	dir          string
	keep         bool
	gomaxprocs   int
	twemConns    int
	readyTimeout time.Duration
	proxyFlags   []string
	only         string
	serve        bool
	binB         string
	proxyBFlags  []string
	pin          bool
	clusters     int
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 6, "interleaved rounds (in each cluster, see --clusters); medians are taken over them; an even number runs as many rounds forwards as backwards")
	flag.Float64Var(&o.seconds, "seconds", 3, "approximate length of each redis-benchmark run")
	flag.IntVar(&o.clients, "clients", 50, "redis-benchmark clients (and naive-client goroutines)")
	flag.StringVar(&o.bin, "bin", "bin/granary", "granary binary")
	flag.StringVar(&o.dir, "dir", "", "work folder for data and logs (default: a temporary folder)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work folder (it is always kept on failure)")
	flag.IntVar(&o.gomaxprocs, "gomaxprocs", 1, "the proxy's --gomaxprocs")
	flag.IntVar(&o.twemConns, "twemproxy-conns", 1, "nutcracker server_connections")
	flag.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "bound on each setup wait")
	flag.Func("proxy-flag", "extra flag for granary proxy, e.g. --proxy-flag=--backend-conns=4 (repeatable)",
		func(s string) error { o.proxyFlags = append(o.proxyFlags, s); return nil })
	flag.StringVar(&o.only, "only", "", "run only these configurations, e.g. GET/1,SET/1 (default: all)")
	flag.StringVar(&o.binB, "bin-b", "", "a second granary binary, run as a second proxy (target granary-b, the async db) beside granary-async in every configuration: two builds compared in one run")
	flag.Func("proxy-b-flag", "extra flag for the --bin-b proxy only (repeatable); with --bin-b=bin/granary it compares settings",
		func(s string) error { o.proxyBFlags = append(o.proxyBFlags, s); return nil })
	flag.BoolVar(&o.pin, "pin", false, "pin the load (redis-benchmark, the naive client) to CPU 0 and every server to CPU 1, so that three busy processes share the two cores the same way in every run")
	flag.IntVar(&o.clusters, "clusters", 1, "start a fresh cluster this many times, --rounds rounds in each; all rounds count in the medians")
	flag.BoolVar(&o.serve, "serve", false, "start the cluster, print how to reach it, and wait for Ctrl-C (for profiling by hand)")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

func run(o options) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.clusters < 1 || o.rounds < 1 {
		return fmt.Errorf("--clusters and --rounds must be at least 1")
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "benchproxy-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil || o.keep {
			fmt.Fprintf(os.Stderr, "logs and data kept in %s\n", o.dir)
		} else {
			os.RemoveAll(o.dir)
		}
	}()
	if _, err := os.Stat(o.bin); err != nil {
		return fmt.Errorf("granary binary: %w (go build -o bin/granary ./cmd/granary)", err)
	}
	for _, c := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%w (bash scripts/deps.sh redis-server redis-tools)", err)
		}
	}

	load0 := loadavg()
	if o.pin {
		// Everything started from here on inherits CPU 0; the servers are
		// moved to CPU 1 once they run.
		if err := pin(0, os.Getpid()); err != nil {
			return err
		}
	}
	var res results
	seen := map[cfgKey][]float64{} // throughputs so far, for request counts
	for ci := 0; ci < o.clusters; ci++ {
		dir := o.dir
		if o.clusters > 1 {
			dir = filepath.Join(o.dir, fmt.Sprintf("cluster%d", ci+1))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			logf("cluster %d/%d", ci+1, o.clusters)
		}
		if err := runCluster(ctx, o, dir, &res, seen); err != nil {
			return err
		}
		if o.serve {
			return nil
		}
	}

	host, _ := os.Hostname()
	proxyArgs := strings.Join(append([]string{"--gomaxprocs", fmt.Sprint(o.gomaxprocs)}, o.proxyFlags...), " ")
	if o.binB != "" {
		proxyArgs += fmt.Sprintf(" (%s; granary-b: %s %s)", o.bin, o.binB, strings.Join(o.proxyBFlags, " "))
	}
	rounds := fmt.Sprintf("%d rounds", o.rounds)
	if o.clusters > 1 {
		rounds = fmt.Sprintf("%d clusters × %d rounds", o.clusters, o.rounds)
	}
	fmt.Printf("\nbenchproxy: %s (medians), %d clients, ~%.0fs per run; granary proxy %s; nutcracker -v 4, server_connections %d\n",
		rounds, o.clients, o.seconds, proxyArgs, o.twemConns)
	pinned := ""
	if o.pin {
		pinned = "; pinned: load on CPU 0, servers on CPU 1"
	}
	fmt.Printf("host %s, %d CPUs, %s, load average %s at start, %s at end%s\n\n",
		host, runtime.NumCPU(), time.Now().Format("2006-01-02 15:04 MST"), load0, loadavg(), pinned)
	res.print(os.Stdout, o.binB != "")
	if errs := res.errorsOf(); len(errs) > 0 {
		fmt.Printf("\n%d failed runs (excluded from the medians):\n  %s\n", len(errs), strings.Join(errs, "\n  "))
	}
	return nil
}

// runCluster starts a cluster in dir, warms it up, runs o.rounds rounds
// against it and stops it, adding the samples to res.
func runCluster(ctx context.Context, o options, dir string, res *results, seen map[cfgKey][]float64) error {
	c := &cluster{dir: dir}
	defer c.stop()
	logf("starting the cluster in %s", dir)
	if err := startCluster(ctx, c, o); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if o.pin {
		if err := pin(1, c.serverPids()...); err != nil {
			return err
		}
	}
	logf("ready: master %s replica %s twemproxy %s (pid %d) granary proxy %s (pid %d), tenant %s, confirmed db %d, async db %d",
		c.master, c.replica, c.twemAddr, c.twem.Pid(), c.proxyAddr, c.proxy.Pid(), c.user, c.confDB, c.asyncDB)

	if o.serve {
		fmt.Printf("redis-benchmark -p %s -c 50 -P 1 -t get --user %s -a %s --dbnum %d   # granary async (confirmed: --dbnum %d)\n",
			portOf(c.proxyAddr), c.user, c.password, c.asyncDB, c.confDB)
		fmt.Printf("redis-benchmark -p %s -c 50 -P 1 -t get   # twemproxy\nredis-benchmark -p %s -c 50 -P 1 -t get   # direct\n",
			portOf(c.twemAddr), portOf(c.master))
		fmt.Printf("pids: granary proxy %d, twemproxy %d\n", c.proxy.Pid(), c.twem.Pid())
		if c.proxyB != nil {
			fmt.Printf("granary-b: port %s pid %d\n", portOf(c.proxyBAddr), c.proxyB.Pid())
		}
		<-ctx.Done()
		return nil
	}
	// Granary sends reads to the replica and writes to the master;
	// twemproxy and direct runs send both to the master.
	targets := map[string]target{
		tDirect:    {name: tDirect, addr: c.master, reads: c.master, writes: c.master},
		tTwem:      {name: tTwem, addr: c.twemAddr, pid: c.twem.Pid(), reads: c.master, writes: c.master},
		tAsync:     {name: tAsync, addr: c.proxyAddr, db: c.asyncDB, user: c.user, pass: c.password, pid: c.proxy.Pid()},
		tConfirmed: {name: tConfirmed, addr: c.proxyAddr, db: c.confDB, user: c.user, pass: c.password, pid: c.proxy.Pid()},
	}
	if c.proxyB != nil {
		targets[tAsyncB] = target{name: tAsyncB, addr: c.proxyBAddr, db: c.asyncDB, user: c.user, pass: c.password, pid: c.proxyB.Pid()}
	}
	for name, t := range targets {
		t.redis = c.pairPids
		if t.reads == "" {
			t.reads, t.writes = c.replica, c.master
		}
		targets[name] = t
	}
	plan := []struct {
		test    string
		pipe    int
		targets []string
	}{
		{"SET", 1, []string{tDirect, tTwem, tAsync, tConfirmed, tNaive}},
		{"GET", 1, []string{tDirect, tTwem, tAsync}},
		{"SET", 16, []string{tDirect, tTwem, tAsync, tConfirmed}},
		{"GET", 16, []string{tDirect, tTwem, tAsync}},
	}
	if c.proxyB != nil {
		// Next to granary-async, so that both follow the same targets
		// (what runs before a target sways it: measured with one binary as
		// both, granary-b did 0.91x at SET P1 when it ran after the naive
		// client). In backward rounds granary-b runs first of the two.
		for i := range plan {
			ts := plan[i].targets
			at := slices.Index(ts, tAsync) + 1
			plan[i].targets = slices.Insert(ts[:len(ts):len(ts)], at, tAsyncB)
		}
	}
	if o.only != "" {
		keep := plan[:0]
		for _, p := range plan {
			if strings.Contains(","+strings.ToUpper(o.only)+",", fmt.Sprintf(",%s/%d,", p.test, p.pipe)) {
				keep = append(keep, p)
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("--only %q matches none of SET/1, GET/1, SET/16, GET/16", o.only)
		}
		plan = keep
	}
	tick := clockTick()
	naiveDur := time.Duration(o.seconds * float64(time.Second))

	// Pilot runs warm every path up (SET first, so GETs find the key).
	// Each run's request count is then the median throughput seen so far
	// for its configuration times o.seconds, so a run lasts about that
	// long however fast the target is, and a noisy pilot is soon outvoted.
	requests := func(k cfgKey) int {
		return max(int(math.Round(median(seen[k])*o.seconds/1000))*1000, 1000)
	}
	for _, p := range plan {
		for _, name := range p.targets {
			if name == tNaive {
				continue
			}
			k := cfgKey{name, p.test, p.pipe}
			s := runBench(ctx, targets[name], p.test, p.pipe, o.clients, 10000*p.pipe, tick)
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			if s.err != nil {
				return fmt.Errorf("pilot: %w", s.err)
			}
			seen[k] = append(seen[k], s.rps)
			logf("pilot %-28s %8.0f rps", k, s.rps)
		}
	}

	warned := map[string]bool{}
	for round := 0; round < o.rounds; round++ {
		for _, p := range plan {
			names := order(p.targets, round)
			for _, name := range names {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted: %w", ctx.Err())
				}
				k := cfgKey{name, p.test, p.pipe}
				var s sample
				if name == tNaive {
					s = runNaive(ctx, c.master, c.replica, o.clients, naiveDur)
				} else {
					s = runBench(ctx, targets[name], p.test, p.pipe, o.clients, requests(k), tick)
				}
				seen[k] = append(seen[k], s.rps)
				res.add(k, s)
				if s.err != nil {
					logf("round %d/%d %-28s FAILED: %v", round+1, o.rounds, k, s.err)
					if err := c.alive(); err != nil {
						return err
					}
					continue
				}
				if s.warn != "" && !warned[name] {
					warned[name] = true
					logf("redis-benchmark against %s warns: %s", name, s.warn)
				}
				logf("round %d/%d %-28s %8.0f rps  p50 %6.3f  p99 %6.3f ms  cpu %s µs/req, Redis %s, redis-benchmark %s, %s req/Redis read  (%d requests)",
					round+1, o.rounds, k, s.rps, s.p50, s.p99, num(s.cpu, "%.2f"), num(s.rcpu, "%.2f"), num(s.lcpu, "%.2f"), num(s.perRead, "%.1f"), s.requests)
			}
		}
	}
	return nil
}

// order is the order of names in a round: rotated so that no target
// always runs first or last in its group, and backwards in every second
// round, each rotation once forwards and once backwards. What runs just
// before a target sways it, and a rotation alone keeps every target behind
// the same one (twemproxy always behind direct Redis, granary-async always
// behind twemproxy); run backwards, each target follows its other
// neighbour.
func order(names []string, round int) []string {
	i := (round / 2) % len(names)
	out := append(append([]string{}, names[i:]...), names[:i]...)
	if round%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// loadavg is the 1-minute load average: how busy the shared machine was.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", a...)
}

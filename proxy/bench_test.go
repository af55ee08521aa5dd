package proxy

import (
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// BenchmarkVersusTwemproxy runs redis-benchmark (50 clients, GET and SET,
// pipeline 1 and 16) interleaved against the backend master directly,
// nutcracker -v 4 in front of it, and this proxy with async and confirmed
// writes, and prints the median throughput and p99 of each. It is a guide
// for development; the project's harness is `make bench-proxy`.
//
//	go test ./proxy/ -run '^$' -bench VersusTwemproxy -benchtime 1x
//
// BENCH_ROUNDS (default 3) and BENCH_N (requests per run, default 200000)
// tune it; BENCH_PROCS sets the proxy's GOMAXPROCS (default 1),
// BENCH_CONNS its BackendConns, BENCH_ONLY filters runs
// ("granary-async/get/1,twemproxy/set/16").
func BenchmarkVersusTwemproxy(b *testing.B) {
	for _, bin := range []string{"redis-benchmark", "nutcracker"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Fatalf("%s not installed", bin)
		}
	}
	procs := envInt("BENCH_PROCS", 1)
	old := runtime.GOMAXPROCS(procs)
	defer runtime.GOMAXPROCS(old)
	e := newEnv(b, func(c *Config) { c.BackendConns = envInt("BENCH_CONNS", c.BackendConns) })
	pass := e.tenant("bench")
	asyncDB := e.db("bench", metadb.WriteAsync)
	confDB := e.db("bench", metadb.WriteConfirmed)
	tw, twPid := startNutcracker(b, e.master.Addr)

	rounds, n := envInt("BENCH_ROUNDS", 3), envInt("BENCH_N", 200000)
	type target struct {
		name string
		args []string
	}
	host, port := splitAddr(e.addr)
	mh, mp := splitAddr(e.master.Addr)
	th, tp := splitAddr(tw)
	targets := []target{
		{"direct", []string{"-h", mh, "-p", mp}},
		{"twemproxy", []string{"-h", th, "-p", tp}},
		{"granary-async", []string{"-h", host, "-p", port, "--user", "bench", "-a", pass, "--dbnum", strconv.Itoa(asyncDB.Index)}},
		{"granary-confirmed", []string{"-h", host, "-p", port, "--user", "bench", "-a", pass, "--dbnum", strconv.Itoa(confDB.Index)}},
	}
	type key struct{ target, test string }
	rps := map[key][]float64{}
	cpu := map[key][]float64{} // proxy CPU µs per request (granary targets only)
	p99 := map[key][]float64{}
	p50 := map[key][]float64{}
	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		for _, pipe := range []int{1, 16} {
			for _, tg := range targets {
				for _, test := range []string{"get", "set"} {
					if only := os.Getenv("BENCH_ONLY"); only != "" && !strings.Contains(only, fmt.Sprintf("%s/%s/%d", tg.name, test, pipe)) {
						continue
					}
					args := append([]string{"-c", "50", "-n", strconv.Itoa(n), "-t", test, "-P", strconv.Itoa(pipe), "--csv"}, tg.args...)
					cpu0 := cpuTime()
					tw0 := procCPU(twPid)
					out, err := exec.Command("redis-benchmark", args...).CombinedOutput()
					if err != nil {
						b.Fatalf("redis-benchmark %s: %v\n%s", tg.name, err, out)
					}
					used := cpuTime() - cpu0
					if tg.name == "twemproxy" {
						used = procCPU(twPid) - tw0
					}
					recs, _ := csv.NewReader(strings.NewReader(csvPart(string(out)))).ReadAll()
					for _, rec := range recs {
						if len(rec) < 7 || rec[0] == "test" {
							continue
						}
						k := key{tg.name, fmt.Sprintf("%s P%d", rec[0], pipe)}
						v, _ := strconv.ParseFloat(rec[1], 64)
						l50, _ := strconv.ParseFloat(rec[4], 64)
						l99, _ := strconv.ParseFloat(rec[6], 64)
						rps[k] = append(rps[k], v)
						if tg.name != "direct" {
							cpu[k] = append(cpu[k], float64(used.Microseconds())/float64(n))
						}
						p50[k] = append(p50[k], l50)
						p99[k] = append(p99[k], l99)
					}
				}
			}
		}
	}
	b.StopTimer()
	var tests []string
	seen := map[string]bool{}
	for k := range rps {
		if !seen[k.test] {
			seen[k.test] = true
			tests = append(tests, k.test)
		}
	}
	sort.Strings(tests)
	for _, test := range tests {
		tw := median(rps[key{"twemproxy", test}])
		for _, tg := range targets {
			k := key{tg.name, test}
			if len(rps[k]) == 0 {
				continue
			}
			m := median(rps[k])
			ratio := 0.0
			if tw > 0 {
				ratio = m / tw
			}
			fmt.Printf("%-10s %-18s %10.0f rps  p50 %.3f ms  p99 %.3f ms  vs twemproxy %.2fx  proxy cpu %.2f µs/req\n",
				test, tg.name, m, median(p50[k]), median(p99[k]), ratio, median(cpu[k]))
		}
	}
}

// cpuTime is this process's user+system CPU time: the proxy's, since the
// benchmark client and the servers are other processes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is another process's user+system CPU time, from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

func csvPart(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "\"") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func splitAddr(a string) (string, string) {
	i := strings.LastIndexByte(a, ':')
	return a[:i], a[i+1:]
}

// startNutcracker runs twemproxy in front of backend, as a tuned deployment
// runs it (-v 4), and stops it at cleanup.
func startNutcracker(tb testing.TB, backend string) (string, int) {
	port, err := redisproc.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	conf := filepath.Join(dir, "nutcracker.yml")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	yml := fmt.Sprintf("bench:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  redis: true\n  servers:\n   - %s:1\n", addr, backend)
	if err := os.WriteFile(conf, []byte(yml), 0o644); err != nil {
		tb.Fatal(err)
	}
	stats, err := redisproc.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	p, err := procgroup.Start(exec.Command("nutcracker", "-c", conf, "-v", "4", "-o", filepath.Join(dir, "nc.log"),
		"-s", strconv.Itoa(stats), "-a", "127.0.0.1", "-p", filepath.Join(dir, "nc.pid")))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Kill)
	redistest.WaitFor(tb, 5*time.Second, "nutcracker to answer on "+addr, func() bool {
		if err := p.Exited(); err != nil {
			tb.Fatal(err)
		}
		out, _ := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "GET", "x").CombinedOutput()
		return !strings.Contains(string(out), "refused") && len(out) > 0
	})
	return addr, p.Pid()
}

//go:build limitsreport

package proxy

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

// TestLimitsReport is the limits benchmark (make bench-limits), a report
// rather than a timed test; results go in docs/benchmarks.md.
//
//  1. Isolation: a quiet tenant's redis-benchmark throughput (GET, 20
//     clients, pipeline 1) alone, and while a noisy tenant at its
//     connection limit keeps opening connections that are refused, at
//     BENCH_STORM_RATE (500/s) and as fast as 4 dialers can; and, to
//     tell the limit's cost from the churn's, while connections that
//     send a PING before AUTH (-NOAUTH) are opened as fast. Interleaved,
//     BENCH_ROUNDS (5) of each, medians compared.
//  2. Rate: a tenant with an ops/s limit driven far over it by 8 pipelined
//     clients for 10 s after the burst is spent; admitted commands per
//     second against the limit.
func TestLimitsReport(t *testing.T) {
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		t.Fatal("redis-benchmark not installed")
	}
	e := newEnv(t)
	quietPass, noisyPass, ratePass := e.tenant("quiet"), e.tenant("noisy"), e.tenant("rated")
	quietDB := e.db("quiet", metadb.WriteAsync)
	e.db("noisy", metadb.WriteAsync)
	rateDB := e.db("rated", metadb.WriteAsync)
	const noisyMax = 20
	e.setLimits("noisy", metadb.Limits{MaxConnections: noisyMax})

	// The noisy tenant's admitted connections, held idle.
	for i := 0; i < noisyMax; i++ {
		if _, got := e.authRaw("noisy", noisyPass); got != "+OK" {
			t.Fatalf("noisy AUTH %d: %s", i, got)
		}
	}

	host, port := splitAddr(e.addr)
	quiet := func() float64 {
		out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "--user", "quiet", "-a", quietPass,
			"--dbnum", strconv.Itoa(quietDB.Index), "-c", "20", "-n", strconv.Itoa(envInt("BENCH_N", 100000)),
			"-t", "get", "-P", "1", "--csv").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		recs, _ := csv.NewReader(strings.NewReader(csvPart(string(out)))).ReadAll()
		for _, rec := range recs {
			if len(rec) > 1 && rec[0] == "GET" {
				v, _ := strconv.ParseFloat(rec[1], 64)
				return v
			}
		}
		t.Fatalf("no GET result in %s", out)
		return 0
	}
	// storm opens noisy connections from 4 dialers until stop, perSec in
	// all (0: as fast as they can), and counts the refusals.
	// With noAuth it sends PING instead of AUTH, which touches no limit
	// (the answer, -NOAUTH, counts as refused): the cost of the churn alone.
	storm := func(stop chan struct{}, perSec int, noAuth bool) (refused, other *atomic.Int64, wait func()) {
		refused, other = new(atomic.Int64), new(atomic.Int64)
		var wg sync.WaitGroup
		auth, want := string(appendCommandStr(nil, "AUTH", "noisy", noisyPass)), "-ERR max number of clients reached"
		if noAuth {
			auth, want = string(appendCommandStr(nil, "PING")), "-NOAUTH"
		}
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var tick <-chan time.Time
				if perSec > 0 {
					tk := time.NewTicker(4 * time.Second / time.Duration(perSec))
					defer tk.Stop()
					tick = tk.C
				}
				for {
					select {
					case <-stop:
						return
					default:
					}
					if tick != nil {
						select {
						case <-stop:
							return
						case <-tick:
						}
					}
					nc, err := net.Dial("tcp", e.addr)
					if err != nil {
						other.Add(1)
						continue
					}
					_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
					_, _ = nc.Write([]byte(auth))
					line, _ := bufio.NewReader(nc).ReadString('\n')
					if strings.HasPrefix(line, want) {
						refused.Add(1)
					} else {
						other.Add(1)
					}
					nc.Close()
				}
			}()
		}
		return refused, other, wg.Wait
	}

	rounds := envInt("BENCH_ROUNDS", 5)
	paced := envInt("BENCH_STORM_RATE", 500)
	type result struct {
		rps            []float64
		refused, other int64
		took           time.Duration
		label          string
		perSec         int
		noAuth         bool
	}
	runs := []*result{{label: "alone"}, {label: fmt.Sprintf("noisy storm %d/s", paced), perSec: paced}, {label: "noisy storm unpaced", perSec: -1},
		{label: "PING churn unpaced", perSec: -1, noAuth: true}}
	for r := 0; r < rounds; r++ {
		for _, res := range runs {
			if res.perSec == 0 {
				res.rps = append(res.rps, quiet())
				continue
			}
			stop := make(chan struct{})
			ref, oth, wait := storm(stop, max(res.perSec, 0), res.noAuth)
			t0 := time.Now()
			res.rps = append(res.rps, quiet())
			close(stop)
			wait()
			res.took += time.Since(t0)
			res.refused += ref.Load()
			res.other += oth.Load()
		}
	}
	base := median(runs[0].rps)
	for _, res := range runs {
		fmt.Printf("isolation: quiet tenant GET P1, 20 clients, %-22s %7.0f rps (median of %d %v), ratio to alone %.2f",
			res.label+":", median(res.rps), rounds, round0(res.rps), median(res.rps)/base)
		if res.perSec != 0 {
			fmt.Printf("; connections refused %d (%.0f/s), not refused %d", res.refused, float64(res.refused)/res.took.Seconds(), res.other)
		}
		fmt.Println()
	}
	fmt.Printf("isolation: noisy tenant's limit %d connections, connected after the storms %d\n", noisyMax, e.p.tenantState("noisy").conns.Load())

	// Rate.
	rate := int64(envInt("BENCH_RATE", 2000))
	e.setLimits("rated", metadb.Limits{OpsPerSec: rate})
	var ok, refused atomic.Int64
	var counting atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e.client("rated", ratePass, rateDB.Index)
			for {
				select {
				case <-stop:
					return
				default:
				}
				pl := c.Pipeline()
				for i := 0; i < 16; i++ {
					pl.Get(e.ctx, "k")
				}
				cmds, _ := pl.Exec(e.ctx)
				if !counting.Load() {
					continue
				}
				for _, cmd := range cmds {
					if err := cmd.Err(); err == nil || err.Error() == "redis: nil" {
						ok.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond) // the burst is spent
	counting.Store(true)
	t0 := time.Now()
	time.Sleep(10 * time.Second)
	counting.Store(false)
	took := time.Since(t0)
	close(stop)
	wg.Wait()
	got := float64(ok.Load()) / took.Seconds()
	fmt.Printf("rate: limit %d ops/s, 8 clients × pipeline 16 over %.1f s: %.0f admitted/s (%+.1f %% of the limit), %.0f refused/s\n",
		rate, took.Seconds(), got, 100*(got-float64(rate))/float64(rate), float64(refused.Load())/took.Seconds())
}

func round0(v []float64) []string {
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf("%.0f", x)
	}
	return out
}

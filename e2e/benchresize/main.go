// Command benchresize measures a live resize (issue 4, "Resize"). Run it
// as
//
//	go run ./e2e/benchresize --bin bin/granary [--fill-mb 50] [--rate 2000]
//
// or through scripts/bench-resize.sh, which builds bin/granary first.
//
// It starts `granary dev` (its own process group, stopped at exit) on free
// ports, creates a 64M db, fills it through the proxy to --fill-mb (of
// which one hash of --big-mb, the rest 1,000-byte strings), then:
//
//  1. the baseline: a plain SCAN + MIGRATE … COPY REPLACE KEYS loop copies
//     the db's slot to a scratch db of the 256M pair (then emptied), timed;
//  2. the resize to 256M through the API while a client does --rate
//     confirmed writes/s through the proxy and reads each one back.
//
// The client load starts before the baseline, so both copies run under it.
// It prints the copy throughput of the resize (the keeper's copy step,
// recorded in the job) next to the baseline's, their ratio (target ≥ 0.8),
// the concurrent writes' p99 and longest latency during the copy step and,
// separately, during the cut-over (targets p99 < 10 ms, max < 50 ms), the
// longest write stall during the cut-over and overall, the errors, stale
// reads and lost writes (target 0).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/granary-db/granary/e2e/resizeload"
	"github.com/granary-db/granary/internal/apiclient"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

func main() {
	bin := flag.String("bin", "bin/granary", "granary binary")
	fillMB := flag.Int64("fill-mb", 50, "data written into the 64M db before the resize")
	rate := flag.Int("rate", 2000, "confirmed writes per second during the resize")
	rounds := flag.Int("rounds", 3, "resizes (64M -> 256M, back, …), each after its baseline")
	bigMB := flag.Int64("big-mb", 20, "of --fill-mb, the size of one big hash among the 1,000-byte keys (0: none)")
	flag.Parse()
	if err := run(*bin, *fillMB, *bigMB, *rate, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "benchresize:", err)
		os.Exit(1)
	}
}

type cluster struct {
	API        string `json:"api"`
	Proxy      string `json:"proxy"`
	AdminToken string `json:"admin_token"`
	Metadb     string `json:"metadb"`
	Demo       struct{ User, Password, Token string }
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startDev(bin string) (*cluster, func(), error) {
	dir, err := os.MkdirTemp("", "benchresize-")
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, "dev", "--dir", dir, "--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort()),
		"--proxy-addr", fmt.Sprintf("127.0.0.1:%d", freePort()))
	p, err := procgroup.StartLogged(cmd, "granary dev", filepath.Join(dir, "dev.log"))
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		p.StopWith(syscall.SIGINT, 20*time.Second)
		if b, err := os.ReadFile(filepath.Join(dir, "dev.log")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "resize") {
					fmt.Println("  dev:", l)
				}
			}
		}
		os.RemoveAll(dir)
	}
	var c cluster
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
		if err == nil && json.Unmarshal(b, &c) == nil {
			return &c, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("granary dev not ready after 60s (log in %s)", dir)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func run(bin string, fillMB, bigMB int64, rate, rounds int) error {
	c, stop, err := startDev(bin)
	if err != nil {
		return err
	}
	defer stop()
	ctx := context.Background()
	var created struct{ Index int }
	if err := apiclient.Call(ctx, "POST", c.API+"/v1/dbs", c.Demo.Token, map[string]string{"size": "64M"}, &created); err != nil {
		return err
	}
	rc := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: created.Index,
		PoolSize: 64, ReadTimeout: 5 * time.Second, MaxRetries: -1})
	defer rc.Close()
	// The big hash goes in first: the keeper's size sampling then knows it
	// as a big key before the small ones come, instead of scaling a sample
	// that hit it by the key count (a transient over-quota ban).
	t0 := time.Now()
	fill := 0
	if bigMB > 0 {
		fields, err := fillBig(ctx, rc, "big", bigMB<<20)
		if err != nil {
			return err
		}
		fmt.Printf("filled the hash \"big\" with %d fields of 150 bytes (~%d MB) in %v\n", fields, bigMB, time.Since(t0).Round(time.Millisecond))
		fill++
		time.Sleep(2 * time.Second) // for the keeper's measurement (quota) to see it
	}
	t0 = time.Now()
	n, err := resizeload.Fill(ctx, rc, (fillMB-bigMB)<<20, 1000)
	if err != nil {
		return err
	}
	fill += n
	fmt.Printf("filled %d keys of 1000 bytes (~%d MB) through the proxy in %v\n", n, fillMB-bigMB, time.Since(t0).Round(time.Millisecond))

	var pools []struct {
		Size  string
		Pairs []struct{ ID, Master string }
	}
	if err := apiclient.Call(ctx, "GET", c.API+"/v1/admin/pools", c.AdminToken, nil, &pools); err != nil {
		return err
	}
	masters := map[string]string{} // pair -> master
	poolMaster := map[string]string{}
	for _, p := range pools {
		for _, pr := range p.Pairs {
			masters[pr.ID] = pr.Master
			poolMaster[p.Size] = pr.Master
		}
	}

	// The client load runs from here on, so that the baselines copy under
	// the same load as the resizes.
	w := &resizeload.Writer{Clients: 32, Rate: rate, Keys: 250, Timeout: 5 * time.Second}
	wctx, stopW := context.WithCancel(ctx)
	done := make(chan struct{})
	loadStart := time.Now()
	go func() { w.Run(wctx, rc); close(done) }()
	defer stopW()
	// A quiet second first: the latency the machine gives with no copy.
	time.Sleep(500 * time.Millisecond)
	idleFrom := time.Now()
	time.Sleep(time.Second)
	ip99, imax, in := w.LatencyIn(idleFrom, time.Now())
	fmt.Printf("concurrent writes with no copy running (1 s): %d, p99 %v, max %v\n", in, ip99.Round(10*time.Microsecond), imax.Round(10*time.Microsecond))

	var ratios []float64
	var cuts []time.Duration
	var copyP99, copyMax, cutP99, cutMax time.Duration
	for r := 0; r < rounds; r++ {
		var db struct {
			Size string
			Slot struct {
				Pair string
				DB   int
			}
		}
		if err := apiclient.Call(ctx, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, created.Index), c.Demo.Token, nil, &db); err != nil {
			return err
		}
		to := "256M"
		if db.Size == "256M" {
			to = "64M"
			// A shrink is refused while the measured size is over 64M: the
			// first measurement of a moved db can scale a sample that hit
			// the big hash by the key count; the next one knows it.
			if err := waitUsedUnder(ctx, c, created.Index, 64<<20); err != nil {
				return err
			}
		}
		src := redis.NewClient(&redis.Options{Addr: masters[db.Slot.Pair], DB: db.Slot.DB, ReadTimeout: 30 * time.Second})
		mem := dbMemory(ctx, src)
		// Scratch db 15 of the target pool's pair: free, since this
		// tenant's only db is on the other pool.
		baseFrom := time.Now()
		base, err := baseline(ctx, src, poolMaster[to], 15)
		src.Close()
		if err != nil {
			return err
		}
		bp99, bmax, bn := w.LatencyIn(baseFrom, time.Now())
		fmt.Printf("round %d: concurrent writes during the baseline SCAN+MIGRATE loop on the source master: %d, p99 %v, max %v\n",
			r+1, bn, bp99.Round(10*time.Microsecond), bmax.Round(10*time.Microsecond))
		time.Sleep(300 * time.Millisecond)
		baseRate := float64(fill) / base.Seconds()
		start := time.Now()
		var ref struct{ Job string }
		if err := apiclient.Call(ctx, "PATCH", fmt.Sprintf("%s/v1/dbs/%d", c.API, created.Index), c.Demo.Token, map[string]string{"size": to}, &ref); err != nil {
			return err
		}
		var job struct {
			State string
			Error string
			Log   []metadb.JobStep
		}
		for {
			if err := apiclient.Call(ctx, "GET", c.API+"/v1/jobs/"+ref.Job, c.Demo.Token, nil, &job); err != nil {
				return err
			}
			if job.State != metadb.JobRunning {
				break
			}
			if time.Since(start) > 5*time.Minute {
				return fmt.Errorf("resize not done after 5 minutes")
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(start)
		if job.State != metadb.JobDone {
			return fmt.Errorf("resize job %s: %s", job.State, job.Error)
		}
		copyMS, err := copyMillis(ctx, c, ref.Job)
		if err != nil {
			return err
		}
		at := map[metadb.Step]time.Time{}
		for _, s := range job.Log {
			at[s.Step], _ = time.Parse(time.RFC3339Nano, s.At)
		}
		copyRate := float64(fill) / (copyMS / 1000)
		cut := w.MaxStallIn(at[metadb.StepCopy], at[metadb.StepSwitch])
		ratios = append(ratios, copyRate/baseRate)
		cuts = append(cuts, cut)
		// The copy step runs from the end of reserve to the end of copy;
		// the cut-over from there to the switch.
		cp99, cmax, cn := w.LatencyIn(at[metadb.StepReserve], at[metadb.StepCopy])
		xp99, xmax, xn := w.LatencyIn(at[metadb.StepCopy], at[metadb.StepSwitch])
		copyP99, copyMax = max(copyP99, cp99), max(copyMax, cmax)
		cutP99, cutMax = max(cutP99, xp99), max(cutMax, xmax)
		fmt.Printf("round %d: concurrent writes during the copy: %d, p99 %v, max %v; during the cut-over: %d, p99 %v, max %v\n",
			r+1, cn, cp99.Round(10*time.Microsecond), cmax.Round(10*time.Microsecond), xn, xp99.Round(10*time.Microsecond), xmax.Round(10*time.Microsecond))
		fmt.Printf("round %d, %s -> %s: baseline SCAN+MIGRATE loop %v = %.0f keys/s (%.1f MB/s); resize copy %.0f ms = %.0f keys/s (%.1f MB/s); ratio %.2f; job %v, cut-over %v, longest write stall in it %v\n",
			r+1, db.Size, to, base.Round(time.Millisecond), baseRate, float64(mem)/(1<<20)/base.Seconds(), copyMS, copyRate,
			float64(mem)/(1<<20)/(copyMS/1000), copyRate/baseRate, took.Round(time.Millisecond),
			at[metadb.StepSwitch].Sub(at[metadb.StepCopy]).Round(time.Millisecond), cut.Round(10*time.Microsecond))
		time.Sleep(300 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stopW()
	<-done
	loadTook := time.Since(loadStart)
	st := w.Stats()
	lost, err := w.Lost(ctx, rc)
	if err != nil {
		return err
	}
	sort.Float64s(ratios)
	slices.Sort(cuts)
	med := ratios[len(ratios)/2]
	fmt.Printf("copy throughput / baseline, median of %d rounds: %.2f (min %.2f, max %.2f; target >= 0.8) %s\n",
		rounds, med, ratios[0], ratios[len(ratios)-1], pass(med >= 0.8))
	fmt.Printf("concurrent write latency during the copies, worst round: p99 %v (target < 10ms) %s, max %v (target < 50ms) %s\n",
		copyP99.Round(10*time.Microsecond), pass(copyP99 < 10*time.Millisecond), copyMax.Round(10*time.Microsecond), pass(copyMax < 50*time.Millisecond))
	fmt.Printf("concurrent write latency during the cut-overs, worst round: p99 %v (target < 10ms) %s, max %v (target < 50ms) %s\n",
		cutP99.Round(10*time.Microsecond), pass(cutP99 < 10*time.Millisecond), cutMax.Round(10*time.Microsecond), pass(cutMax < 50*time.Millisecond))
	fmt.Printf("longest write stall during a cut-over: %v (target < 100ms) %s; longest overall (copies and baselines included): %v\n",
		cuts[len(cuts)-1].Round(10*time.Microsecond), pass(cuts[len(cuts)-1] < 100*time.Millisecond), st.MaxStall.Round(10*time.Microsecond))
	fmt.Printf("writes acknowledged: %d in %v = %.0f/s (asked %d/s), each read back; errors: %d, stale reads: %d, lost writes: %d %s\n",
		st.Writes, loadTook.Round(time.Millisecond), float64(st.Writes)/loadTook.Seconds(), rate, st.Errors, st.Stale, lost,
		pass(st.Errors == 0 && st.Stale == 0 && lost == 0))
	if st.FirstErr != nil {
		fmt.Printf("first error: %v\n", st.FirstErr)
	}
	if n := rc.DBSize(ctx).Val(); n != int64(fill+w.Written()) {
		return fmt.Errorf("db holds %d keys after the resizes, want %d", n, fill+w.Written())
	}
	return nil
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// baseline copies the slot to a scratch db of the target server with the
// plainest loop, then empties the scratch db.
func baseline(ctx context.Context, src *redis.Client, dstAddr string, dstDB int) (time.Duration, error) {
	host, port, _ := net.SplitHostPort(dstAddr)
	dst := redis.NewClient(&redis.Options{Addr: dstAddr, DB: dstDB})
	defer dst.Close()
	if err := dst.FlushDB(ctx).Err(); err != nil {
		return 0, err
	}
	start := time.Now()
	var cursor uint64
	for {
		keys, next, err := src.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			return 0, err
		}
		if len(keys) > 0 {
			args := []any{"MIGRATE", host, port, "", dstDB, 20000, "COPY", "REPLACE", "KEYS"}
			for _, k := range keys {
				args = append(args, k)
			}
			if err := src.Do(ctx, args...).Err(); err != nil {
				return 0, err
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	took := time.Since(start)
	return took, dst.FlushDB(ctx).Err()
}

// waitUsedUnder waits (at most a minute) until the db's measured size is
// under limit.
func waitUsedUnder(ctx context.Context, c *cluster, index int, limit int64) error {
	deadline := time.Now().Add(time.Minute)
	for {
		var db struct {
			UsedBytes int64 `json:"used_bytes"`
		}
		if err := apiclient.Call(ctx, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, index), c.Demo.Token, nil, &db); err != nil {
			return err
		}
		if db.UsedBytes < limit {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("db %d measured at %d bytes for a minute, over %d", index, db.UsedBytes, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fillBig writes a hash of about bytes of server memory through c, in
// pipelines of 1,000 fields of 150 bytes; it returns the field count.
func fillBig(ctx context.Context, c *redis.Client, key string, bytes int64) (int, error) {
	n := int(bytes / 210) // value, field name and the dict entry's overhead
	val := strings.Repeat("h", 150)
	for i := 0; i < n; i += 1000 {
		p := c.Pipeline()
		for j := i; j < min(i+1000, n); j++ {
			p.HSet(ctx, key, "f"+strconv.Itoa(j), val)
		}
		if _, err := p.Exec(ctx); err != nil {
			return i, fmt.Errorf("fill %s: %w", key, err)
		}
	}
	return n, nil
}

func dbMemory(ctx context.Context, c *redis.Client) int64 {
	n := c.DBSize(ctx).Val()
	var sum, k int64
	for i := 0; i < 200; i++ {
		key := c.RandomKey(ctx).Val()
		if key == "" {
			break
		}
		if key == "big" {
			continue
		}
		sum += c.MemoryUsage(ctx, key).Val()
		k++
	}
	if k == 0 {
		return 0
	}
	big := c.MemoryUsage(ctx, "big").Val() // 0 when there is none
	return sum/k*(n-min(n, 1)) + big
}

// copyMillis reads the keeper's own timing of its copy step from the job
// record in metadb (the API shows the bytes copied, not the timing).
func copyMillis(ctx context.Context, c *cluster, id string) (float64, error) {
	store, err := metadb.Open(metadb.Config{URL: c.Metadb})
	if err != nil {
		return 0, err
	}
	defer store.Close()
	j, err := store.Job(ctx, id)
	if err != nil {
		return 0, err
	}
	ms, err := strconv.ParseFloat(j.Data[metadb.ResizeCopyMillis], 64)
	if err != nil {
		return 0, fmt.Errorf("job %s shows no copy time: %w", id, err)
	}
	return ms, nil
}

// Command benchfailover is the failover benchmark (issue 4, `make
// bench-failover`): it SIGKILLs a pair's master again and again while
// clients do confirmed writes, first under Granary (keeper, proxy, spare
// pool), then under Redis Sentinel on the same kind of pair, and prints per
// kill how long writes were unavailable, how many acknowledged writes were
// lost, and whether a spare became the new replica. With --stop (issue 13,
// item 2) the master hangs (SIGSTOP) instead of dying, and once the
// failover is over it is resumed and must refuse writes (hung.go).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// keySpace is how many keys each client cycles through: a bounded data
// set keeps the full sync of a new replica equally cheap in every round and
// for both systems, whatever their write rates.
const keySpace = 5000

type config struct {
	bin      string
	rounds   int
	clients  int
	detect   time.Duration
	sentinel bool
	stop     bool
	dir      string
}

// verb is what a round does to the master, for the output.
func (c config) verb() string {
	if c.stop {
		return "stopped"
	}
	return "killed"
}

// result is one system's figures.
type result struct {
	name     string
	unavail  []time.Duration
	attached int
	acked    int
	lost     int
	fails    int64
	notes    []string
	// fence counts, in --stop mode, the outcomes of the writes tried on
	// the resumed old master: queued while stopped, and after SIGCONT.
	queued, resumed map[string]int
}

func (r *result) fenced(queued, resumed string) {
	if r.queued == nil {
		r.queued, r.resumed = map[string]int{}, map[string]int{}
	}
	r.queued[queued]++
	r.resumed[resumed]++
}

func (r *result) add(d time.Duration, attached bool) {
	r.unavail = append(r.unavail, d)
	if attached {
		r.attached++
	}
}

func (r *result) pct(q float64) time.Duration {
	if len(r.unavail) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), r.unavail...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func main() {
	var cfg config
	flag.StringVar(&cfg.bin, "bin", "bin/granary", "granary binary")
	flag.IntVar(&cfg.rounds, "rounds", 20, "master kills per system")
	flag.IntVar(&cfg.clients, "clients", 4, "clients doing confirmed writes")
	flag.DurationVar(&cfg.detect, "detect", time.Second, "detection time: keeper --detect-time and Sentinel down-after-milliseconds")
	flag.BoolVar(&cfg.sentinel, "sentinel", true, "also run Redis Sentinel")
	flag.BoolVar(&cfg.stop, "stop", false, "hang the master (SIGSTOP) instead of killing it, resume it after the failover and check that it refuses writes")
	flag.StringVar(&cfg.dir, "dir", "", "work folder (default: a temporary one, removed at the end)")
	flag.Parse()
	// go-redis logs every failed dial; failed writes are what is measured.
	redis.SetLogger(quiet{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "benchfailover:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config) error {
	if cfg.dir == "" {
		d, err := os.MkdirTemp("", "benchfailover-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		cfg.dir = d
	}
	what := "kills (SIGKILL of the pair's master)"
	if cfg.stop {
		what = "hangs (SIGSTOP of the pair's master, SIGCONT after the failover)"
	}
	fmt.Printf("failover benchmark: %d %s per system, %d clients doing confirmed writes, detection %v\n\n",
		cfg.rounds, what, cfg.clients, cfg.detect)
	var results []*result
	for _, sys := range []struct {
		name string
		on   bool
		run  func(context.Context, config, *procs) (*result, error)
	}{{"granary", true, runGranary}, {"sentinel", cfg.sentinel, runSentinel}} {
		if !sys.on {
			continue
		}
		p := &procs{dir: cfg.dir + "/" + sys.name}
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return err
		}
		res, err := sys.run(ctx, cfg, p)
		p.stopAll()
		if err != nil {
			return fmt.Errorf("%s: %w", sys.name, err)
		}
		results = append(results, res)
		fmt.Println()
	}
	rounds := "kills"
	if cfg.stop {
		rounds = "hangs"
	}
	fmt.Printf("| system | %s | unavailability median | p90 | max | acknowledged writes | lost | new replica attached |\n", rounds)
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %d | %v | %v | %v | %d | %d | %d of %d |\n", r.name, len(r.unavail),
			r.pct(0.5).Round(time.Millisecond), r.pct(0.9).Round(time.Millisecond), r.pct(1).Round(time.Millisecond),
			r.acked, r.lost, r.attached, len(r.unavail))
	}
	if cfg.stop {
		fmt.Println()
		fmt.Println("| system | resumed old masters | write queued while stopped: refused / accepted | write after SIGCONT: refused / accepted / after reclaim |")
		fmt.Println("|---|---|---|---|")
		for _, r := range results {
			fmt.Printf("| %s | %d | %d / %d | %d / %d / %d |\n", r.name, r.queued[fenceRefused]+r.queued[fenceAccepted],
				r.queued[fenceRefused], r.queued[fenceAccepted],
				r.resumed[fenceRefused], r.resumed[fenceAccepted], r.resumed[fenceAfterReclaim])
		}
	}
	for _, r := range results {
		if len(r.notes) > 0 {
			fmt.Printf("\n%s: %s\n", r.name, strings.Join(r.notes, "; "))
		}
	}
	return nil
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

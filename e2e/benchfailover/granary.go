package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/granary-db/granary/internal/failoverload"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// runGranary measures Granary: a pair behind the proxy, with the master,
// keeper and proxy as separate granary processes, a fresh spare in the
// pool before every kill, and clients doing confirmed writes through the
// proxy.
func runGranary(ctx context.Context, cfg config, p *procs) (*result, error) {
	meta, err := p.redisServer(ctx, "")
	if err != nil {
		return nil, err
	}
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr, PoolSize: 16})
	if err != nil {
		return nil, err
	}
	defer store.Close()
	m, err := p.redisServer(ctx, "")
	if err != nil {
		return nil, err
	}
	r, err := p.redisServer(ctx, m.Addr)
	if err != nil {
		return nil, err
	}
	servers := map[string]*redisproc.Proc{m.Addr: m, r.Addr: r}
	pair, err := store.AddPair(ctx, "64M", m.Addr, r.Addr, []int{0, 1, 2, 3})
	if err != nil {
		return nil, err
	}
	if _, err := store.CreateTenant(ctx, "bench", "bench", "tok", "pw"); err != nil {
		return nil, err
	}
	port, err := redisproc.FreePort()
	if err != nil {
		return nil, err
	}
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", port)
	url := "redis://" + meta.Addr
	for _, c := range [][]string{
		{"master", "--metadb-url", url, "--id", "m1"},
		{"keeper", "--metadb-url", url, "--id", "k1", "--detect-time", cfg.detect.String()},
		{"proxy", "--metadb-url", url, "--id", "px", "--addr", proxyAddr},
	} {
		if _, err := p.child("granary-"+c[0], cfg.bin, c...); err != nil {
			return nil, err
		}
	}
	_, job, err := store.ClaimDB(ctx, "bench", pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		return nil, err
	}
	if err := until(ctx, 30*time.Second, "db created", func() bool {
		j, _ := store.Job(ctx, job.ID)
		return j != nil && j.State == metadb.JobDone
	}); err != nil {
		return nil, err
	}
	fns := make([]failoverload.WriteFunc, cfg.clients)
	for i := range fns {
		c := redis.NewClient(&redis.Options{Addr: proxyAddr, Username: "bench", Password: "pw", DB: job.Index,
			MaxRetries: -1, DialerRetries: 1, PoolSize: 1, DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
		defer c.Close()
		fns[i] = func(ctx context.Context, key, value string) error { return c.Set(ctx, key, value, 0).Err() }
	}
	if err := until(ctx, 30*time.Second, "the proxy to serve the db", func() bool { return fns[0](ctx, "ready", "1") == nil }); err != nil {
		return nil, err
	}
	w := failoverload.Start(ctx, keySpace, fns...)
	res := &result{name: "Granary (keeper, detect " + cfg.detect.String() + ")"}
	for round := 1; round <= cfg.rounds; round++ {
		spare, err := p.redisServer(ctx, "")
		if err != nil {
			return nil, err
		}
		servers[spare.Addr] = spare
		if err := store.AddSpare(ctx, spare.Addr); err != nil {
			return nil, err
		}
		var before *metadb.Pair
		if err := until(ctx, 15*time.Second, "the keeper to watch the pair", func() bool {
			before, _ = store.Pair(ctx, pair.ID)
			h, err := store.PairHealth(ctx, pair.ID)
			return before != nil && err == nil && h.Master.Addr == before.Master && h.Master.Up &&
				h.Replica.Addr == before.Replica && h.Replica.LinkUp
		}); err != nil {
			return nil, err
		}
		if err := w.Flowing(ctx, 10*time.Second); err != nil {
			return nil, fmt.Errorf("writes not flowing before a kill: %w", err)
		}
		killAt := w.MarkKill()
		old := servers[before.Master]
		if cfg.stop {
			if err := old.Signal(syscall.SIGSTOP); err != nil {
				return nil, err
			}
		} else {
			old.Kill()
		}
		var after *metadb.Pair
		var promotedAt time.Time
		err = until(ctx, 30*time.Second, "failover, a new replica and writes", func() bool {
			after, _ = store.Pair(ctx, pair.ID)
			if promotedAt.IsZero() && after != nil && after.Master == before.Replica {
				promotedAt = time.Now()
			}
			return after != nil && after.Master == before.Replica && after.Replica != "" &&
				after.State == metadb.PairActive && !w.Back().IsZero()
		})
		if err != nil {
			res.notes = append(res.notes, fmt.Sprintf("round %d: %v", round, err))
			break
		}
		took := w.Back().Sub(killAt)
		attached := after.Replica == spare.Addr
		if cfg.stop {
			// The spare pool also holds the old masters of earlier
			// rounds, resumed and reclaimed: any of them may be taken.
			attached = after.Replica != ""
		}
		res.add(took, attached)
		fmt.Printf("granary  round %2d: %s %s, promoted %s after %v, spare attached %v: writes unavailable %v\n",
			round, cfg.verb(), before.Master, after.Master, promotedAt.Sub(killAt).Round(time.Millisecond), attached, took.Round(time.Millisecond))
		if cfg.stop {
			// The proxies' backend credentials: the tenant user they
			// create on every master (no backend password: "granary").
			queued, resumed, err := checkFence(ctx, fenceTarget{addr: before.Master, user: "granary-tenant", pass: "granary",
				resume: func() error { return old.Signal(syscall.SIGCONT) }, reclaims: true}, round)
			if err != nil {
				return nil, fmt.Errorf("round %d: fence check: %w", round, err)
			}
			res.fenced(queued, resumed)
			fmt.Printf("granary  round %2d: resumed old master: write queued while stopped %s, write after SIGCONT %s\n", round, queued, resumed)
		}
	}
	time.Sleep(200 * time.Millisecond)
	var acked map[string]int
	res.acked, acked = w.Halt()
	res.fails = w.Fails()
	final, err := store.Pair(ctx, pair.ID)
	if err != nil {
		return nil, err
	}
	res.lost, err = countLost(ctx, final.Master, job.SlotDB, acked)
	return res, err
}

// countLost counts the acknowledged writes lost on the server at addr, db
// (failoverload.Lost).
func countLost(ctx context.Context, addr string, db int, acked map[string]int) (int, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	defer c.Close()
	n, err := failoverload.Lost(ctx, c, acked)
	if err != nil {
		return 0, fmt.Errorf("read back from %s: %w", addr, err)
	}
	return n, nil
}

// until polls cond every 5 ms until it holds or timeout passes.
func until(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/granary-db/granary/internal/failoverload"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/redis/go-redis/v9"
)

const sentinelName = "gm"

// runSentinel measures Redis Sentinel on the same kind of pair: one
// sentinel (quorum 1, down-after-milliseconds = the detection time), clients
// that find the master through it and acknowledge a write only when
// WAIT 1 says the replica has it. Sentinel has no spare pool: the harness
// plays the fastest possible operator and points a pre-started spare at the
// new master the moment Sentinel reports the switch.
func runSentinel(ctx context.Context, cfg config, p *procs) (*result, error) {
	bin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		return nil, errors.New("redis-sentinel not found: bash scripts/deps.sh redis-sentinel")
	}
	m, err := p.redisServer(ctx, "")
	if err != nil {
		return nil, err
	}
	r, err := p.redisServer(ctx, m.Addr)
	if err != nil {
		return nil, err
	}
	servers := map[string]*redisproc.Proc{m.Addr: m, r.Addr: r}
	port, err := redisproc.FreePort()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(p.dir, "sentinel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host, mport, _ := net.SplitHostPort(m.Addr)
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor %s %s %s 1
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 10000
sentinel parallel-syncs %s 1
`, port, dir, sentinelName, host, mport, sentinelName, cfg.detect.Milliseconds(), sentinelName, sentinelName)
	confPath := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if _, err := p.child("redis-sentinel", bin, confPath); err != nil {
		return nil, err
	}
	sent := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port), Protocol: 2, MaxRetries: -1})
	defer sent.Close()
	masterOf := func() string {
		a, err := sent.Do(ctx, "SENTINEL", "get-master-addr-by-name", sentinelName).StringSlice()
		if err != nil || len(a) != 2 {
			return ""
		}
		return net.JoinHostPort(a[0], a[1])
	}
	fns := make([]failoverload.WriteFunc, cfg.clients)
	for i := range fns {
		sc := &sentinelClient{masterOf: masterOf}
		defer sc.close()
		fns[i] = sc.write
	}
	if err := until(ctx, 20*time.Second, "sentinel to serve writes", func() bool { return fns[0](ctx, "ready", "1") == nil }); err != nil {
		return nil, err
	}
	w := failoverload.Start(ctx, keySpace, fns...)
	res := &result{name: fmt.Sprintf("Redis Sentinel (down-after %dms)", cfg.detect.Milliseconds())}
	for round := 1; round <= cfg.rounds; round++ {
		spare, err := p.redisServer(ctx, "")
		if err != nil {
			return nil, err
		}
		servers[spare.Addr] = spare
		// Forget the dead masters of earlier rounds, as an operator would:
		// Sentinel keeps probing them as down replicas, and its failovers
		// slow down round after round when they pile up.
		if round > 1 {
			if err := sent.Do(ctx, "SENTINEL", "RESET", sentinelName).Err(); err != nil {
				return nil, err
			}
		}
		old := masterOf()
		replica := ""
		if err := until(ctx, 30*time.Second, "sentinel to know a healthy replica", func() bool {
			replica = healthyReplica(ctx, sent)
			return replica != ""
		}); err != nil {
			return nil, err
		}
		if err := w.Flowing(ctx, 10*time.Second); err != nil {
			return nil, fmt.Errorf("writes not flowing before a kill: %w", err)
		}
		killAt := w.MarkKill()
		if cfg.stop {
			if err := servers[old].Signal(syscall.SIGSTOP); err != nil {
				return nil, err
			}
		} else {
			servers[old].Kill()
		}
		// The operator: attach the spare as soon as Sentinel switches.
		attached := false
		err = until(ctx, 60*time.Second, "sentinel failover and writes", func() bool {
			cur := masterOf()
			if !attached && cur != "" && cur != old {
				h, pt, _ := net.SplitHostPort(cur)
				c := redis.NewClient(&redis.Options{Addr: spare.Addr})
				attached = c.Do(ctx, "REPLICAOF", h, pt).Err() == nil
				c.Close()
			}
			return attached && !w.Back().IsZero()
		})
		if err != nil {
			res.notes = append(res.notes, fmt.Sprintf("round %d: %v", round, err))
			break
		}
		took := w.Back().Sub(killAt)
		res.add(took, attached)
		fmt.Printf("sentinel round %2d: %s %s, promoted %s (replica was %s): writes unavailable %v\n",
			round, cfg.verb(), old, masterOf(), replica, took.Round(time.Millisecond))
		if cfg.stop {
			// Sentinel's clients use the default user. Sentinel turns a
			// resumed old master into a replica of the new one when it
			// notices it; the old master is then killed, as in the kill
			// mode, so that the rounds stay alike.
			proc := servers[old]
			queued, resumed, err := checkFence(ctx, fenceTarget{addr: old, resume: func() error { return proc.Signal(syscall.SIGCONT) }}, round)
			if err != nil {
				return nil, fmt.Errorf("round %d: fence check: %w", round, err)
			}
			proc.Kill()
			res.fenced(queued, resumed)
			fmt.Printf("sentinel round %2d: resumed old master: write queued while stopped %s, write after SIGCONT %s\n", round, queued, resumed)
		}
	}
	time.Sleep(200 * time.Millisecond)
	var acked map[string]int
	res.acked, acked = w.Halt()
	res.fails = w.Fails()
	res.lost, err = countLost(ctx, masterOf(), 0, acked)
	return res, err
}

// healthyReplica is a replica Sentinel lists with no down or disconnected
// flag and its link up, or "".
func healthyReplica(ctx context.Context, sent *redis.Client) string {
	v, err := sent.Do(ctx, "SENTINEL", "replicas", sentinelName).Slice()
	if err != nil {
		return ""
	}
	for _, e := range v {
		kv, ok := e.([]any)
		if !ok {
			continue
		}
		f := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			k, _ := kv[i].(string)
			s, _ := kv[i+1].(string)
			f[k] = s
		}
		if f["flags"] == "slave" && f["master-link-status"] == "ok" {
			return net.JoinHostPort(f["ip"], f["port"])
		}
	}
	return ""
}

// sentinelClient writes to the master Sentinel names, with WAIT 1 as the
// acknowledgement; on any failure it asks Sentinel again.
type sentinelClient struct {
	masterOf func() string
	c        *redis.Client
}

var errNotConfirmed = errors.New("WAIT 1: the replica did not confirm")

func (s *sentinelClient) write(ctx context.Context, key, value string) error {
	if s.c == nil {
		addr := s.masterOf()
		if addr == "" {
			return errors.New("sentinel names no master")
		}
		s.c = redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, PoolSize: 1, DialTimeout: time.Second,
			ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
	}
	var wait *redis.Cmd
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, value, 0)
		wait = p.Do(ctx, "WAIT", 1, 1000)
		return nil
	})
	if n, _ := wait.Int64(); err == nil && n < 1 {
		err = errNotConfirmed
	}
	if err != nil {
		s.close()
	}
	return err
}

func (s *sentinelClient) close() {
	if s.c != nil {
		_ = s.c.Close()
		s.c = nil
	}
}

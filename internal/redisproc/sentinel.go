package redisproc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelConfig describes one Redis Sentinel watching one master.
type SentinelConfig struct {
	// Dir is the working directory; the Sentinel rewrites its config file
	// there. Required.
	Dir string
	// Port to listen on; 0 picks a free loopback port.
	Port int
	// MasterName is the name the master is monitored under. Required.
	MasterName string
	// Master is the master's host:port. Required.
	Master string
	// Quorum is how many Sentinels must agree the master is down. Default 2.
	Quorum int
	// DownAfter is how long the master may not answer before it counts as
	// down. Default 1.5s. Keep it above a second, Sentinel's ping period: a
	// Sentinel times an instance it just learned of (a master it switched
	// to) from the moment it learned of it but pings it only a second later,
	// so with 1s it may count a healthy new master down and fail over again.
	DownAfter time.Duration
	// FailoverTimeout bounds a failover (and spaces retries). Default 5s.
	FailoverTimeout time.Duration
	// Binary is the server binary; default "redis-server" (run with
	// --sentinel), which is what Debian's redis-sentinel is too.
	Binary string
}

// StaggeredDownAfter is the DownAfter of the i-th (from 0) of a group of
// Sentinels on one host: 1.5s, then a quarter second more for each. Equal
// timings make the Sentinels see the master down at the same moment and
// each vote for itself; the failover is then retried only after twice the
// failover timeout. Staggered, the first two to see it ask the last one,
// still undecided, whose vote elects one of them.
func StaggeredDownAfter(i int) time.Duration {
	return 1500*time.Millisecond + time.Duration(i)*250*time.Millisecond
}

// StartSentinel starts a Sentinel and waits until it answers PING. When
// Port is 0 it retries with other ports if the chosen one was taken.
func StartSentinel(ctx context.Context, cfg SentinelConfig) (*Proc, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = "redis-server"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, ErrNotFound
	}
	if cfg.Quorum == 0 {
		cfg.Quorum = 2
	}
	if cfg.DownAfter == 0 {
		cfg.DownAfter = 1500 * time.Millisecond
	}
	if cfg.FailoverTimeout == 0 {
		cfg.FailoverTimeout = 5 * time.Second
	}
	host, mport, err := net.SplitHostPort(cfg.Master)
	if err != nil {
		return nil, fmt.Errorf("sentinel master %q: %w", cfg.Master, err)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	return onFreePort(cfg.Port, func(port int) (*Proc, error) {
		conf := filepath.Join(cfg.Dir, fmt.Sprintf("sentinel-%d.conf", port))
		body := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
daemonize no
dir %s
logfile %s
sentinel monitor %s %s %s %d
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s %d
sentinel parallel-syncs %s 1
`, port, cfg.Dir, filepath.Join(cfg.Dir, fmt.Sprintf("sentinel-%d.log", port)),
			cfg.MasterName, host, mport, cfg.Quorum,
			cfg.MasterName, cfg.DownAfter.Milliseconds(),
			cfg.MasterName, cfg.FailoverTimeout.Milliseconds(),
			cfg.MasterName)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return nil, err
		}
		return run(ctx, exec.Command(bin, conf, "--sentinel"), cfg.Dir, port)
	})
}

// SentinelMaster asks the Sentinel at addr which server is the master
// monitored under name (host:port).
func SentinelMaster(ctx context.Context, addr, name string) (string, error) {
	c := newSentinelClient(addr)
	defer c.Close()
	hp, err := c.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", err
	}
	if len(hp) != 2 {
		return "", fmt.Errorf("sentinel %s: master %q: got %v", addr, name, hp)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// WaitSentinels waits until every Sentinel in addrs knows the other
// Sentinels and at least replicas replicas of the master name: before
// that a failover could not be agreed on or would have no one to promote.
func WaitSentinels(ctx context.Context, addrs []string, name string, replicas int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ready := true
		for _, a := range addrs {
			c := newSentinelClient(a)
			m, err := c.Master(ctx, name).Result()
			var rs []map[string]string
			if err == nil {
				rs, err = c.Replicas(ctx, name).Result()
			}
			_ = c.Close()
			if err != nil || atoi(m["num-other-sentinels"]) < len(addrs)-1 || healthy(rs) < replicas {
				ready = false
				break
			}
		}
		if ready {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sentinels %v for %q not ready: %w", addrs, name, ctx.Err())
		case <-tick.C:
		}
	}
}

// healthy counts the replicas a Sentinel could promote: up, linked to the
// master, and described by an INFO reply of the last 10 s. A replica the
// Sentinel learned of at a failover (the old master) has an entry before
// it ever answered INFO, which looks healthy but is skipped at the next
// failover ("no good slave"): the failover is then retried only after
// twice the failover timeout.
func healthy(rs []map[string]string) int {
	n := 0
	for _, r := range rs {
		if !strings.Contains(r["flags"], "down") && !strings.Contains(r["flags"], "disconnected") &&
			r["master-link-status"] == "ok" && r["role-reported"] == "slave" && atoi(r["info-refresh"]) < 10_000 {
			n++
		}
	}
	return n
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func newSentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
}

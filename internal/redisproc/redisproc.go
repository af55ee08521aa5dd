// Package redisproc starts and stops real redis-server processes on loopback
// ports. `granary dev` uses it for its local cluster and the tests use it
// (through redistest) for every package that talks to Redis.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/redis/go-redis/v9"
)

// Config describes one redis-server.
type Config struct {
	// Dir is the working directory (dump files, logs). Required.
	Dir string
	// Port to listen on; 0 picks a free loopback port.
	Port int
	// ReplicaOf is the host:port of a master to replicate from, if any.
	ReplicaOf string
	// Args are extra "name value" config directives, e.g. {"maxmemory", "1gb"}.
	Args []string
	// Binary is the redis-server binary; default "redis-server" from PATH.
	Binary string
}

// Proc is a running redis-server in its own process group; Signal, Kill,
// Stop and Done act on that group (procgroup.Proc).
type Proc struct {
	Addr string
	Port int
	Dir  string
	*procgroup.Proc
}

// ErrNotFound is returned when redis-server is not installed.
var ErrNotFound = errors.New("redis-server not found in PATH (apt-get install -y redis-server)")

// FreePort asks the kernel for a free loopback port. Another process may take
// it before it is used, so callers retry on a bind failure.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts redis-server and waits until it answers PING. When Port is 0
// it retries with other ports if the chosen one was taken meanwhile.
func Start(ctx context.Context, cfg Config) (*Proc, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = "redis-server"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, ErrNotFound
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	return onFreePort(cfg.Port, func(port int) (*Proc, error) { return startOn(ctx, bin, cfg, port) })
}

// onFreePort runs start on port, or, when port is 0, on a free loopback
// port, trying up to 8 ports: another process may take a free port before
// the server binds it.
func onFreePort(port int, start func(port int) (*Proc, error)) (*Proc, error) {
	var lastErr error
	for attempt := 0; attempt < 8; attempt++ {
		try := port
		if try == 0 {
			p, err := FreePort()
			if err != nil {
				return nil, err
			}
			try = p
		}
		p, err := start(try)
		if err == nil {
			return p, nil
		}
		lastErr = err
		if port != 0 {
			break
		}
	}
	return nil, lastErr
}

func startOn(ctx context.Context, bin string, cfg Config, port int) (*Proc, error) {
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", cfg.Dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", filepath.Join(cfg.Dir, fmt.Sprintf("redis-%d.log", port)),
		"--dbfilename", fmt.Sprintf("dump-%d.rdb", port),
		"--protected-mode", "no",
		// Full syncs start at once instead of waiting 5s for more replicas.
		"--repl-diskless-sync-delay", "0",
	}
	if cfg.ReplicaOf != "" {
		h, p, err := net.SplitHostPort(cfg.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("replicaof %q: %w", cfg.ReplicaOf, err)
		}
		args = append(args, "--replicaof", h, p)
	}
	for i := 0; i+1 < len(cfg.Args); i += 2 {
		args = append(args, "--"+strings.TrimPrefix(cfg.Args[i], "--"), cfg.Args[i+1])
	}
	return run(ctx, exec.Command(bin, args...), cfg.Dir, port)
}

// run starts cmd, a server that will listen on port, and waits until it
// answers there.
func run(ctx context.Context, cmd *exec.Cmd, dir string, port int) (*Proc, error) {
	g, err := procgroup.Start(cmd)
	if err != nil {
		return nil, err
	}
	p := &Proc{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, Proc: g}

	c := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	// Whoever answers on the port must be this process: with a taken port
	// another server would answer while ours exits on its bind error.
	want := "process_id:" + strconv.Itoa(p.Pid()) + "\r\n"
	for {
		if info, err := c.Info(ctx, "server").Result(); err == nil && strings.Contains(info, want) {
			return p, nil
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("%s on port %d exited at start (port taken?)", cmd.Path, port)
		case <-ctx.Done():
			p.Kill()
			return nil, ctx.Err()
		case <-deadline.C:
			p.Kill()
			return nil, fmt.Errorf("%s on port %d did not answer within 10s", cmd.Path, port)
		case <-tick.C:
		}
	}
}

// WaitLinkUp waits until the replica at addr reports master_link_status:up.
func WaitLinkUp(ctx context.Context, addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica %s link not up: %w", addr, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitReplicating waits until the master at masterAddr counts at least one
// replica in WAIT. A replica's link shows "up" before the master streams to
// it (after a diskless sync the master waits for its first REPLCONF ACK),
// so a WAIT right after WaitLinkUp can still time out.
func WaitReplicating(ctx context.Context, masterAddr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: masterAddr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		conn := c.Conn()
		n, err := func() (int64, error) {
			defer conn.Close()
			// A write that leaves nothing behind: callers may need empty dbs.
			if err := conn.Set(ctx, "granary:replication-probe", "1", 0).Err(); err != nil {
				return 0, err
			}
			if err := conn.Del(ctx, "granary:replication-probe").Err(); err != nil {
				return 0, err
			}
			return conn.Wait(ctx, 1, 100*time.Millisecond).Result()
		}()
		if err == nil && n >= 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("master %s: no replica acknowledges writes: %w", masterAddr, ctx.Err())
		case <-tick.C:
		}
	}
}

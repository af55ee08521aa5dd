package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/granary-db/granary/internal/redisproc"
)

// child is a process the harness started in its own process group, with
// its output in <dir>/<name>.log. stop ends that group and nothing else.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(dir, name, bin string, args ...string) (*child, error) {
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(c.done) }()
	return c, nil
}

func (c *child) stop() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
}

// procs tracks everything the harness started, to stop it all at the end.
type procs struct {
	dir      string
	mu       sync.Mutex
	children []*child
	redis    []*redisproc.Proc
	n        int
}

func (p *procs) child(name, bin string, args ...string) (*child, error) {
	c, err := startChild(p.dir, name, bin, args...)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.children = append(p.children, c)
	p.mu.Unlock()
	return c, nil
}

// redisServer starts a redis-server (a replica of replicaOf when set) with
// the pair servers' settings.
func (p *procs) redisServer(ctx context.Context, replicaOf string) (*redisproc.Proc, error) {
	p.mu.Lock()
	p.n++
	dir := filepath.Join(p.dir, fmt.Sprintf("redis-%d", p.n))
	p.mu.Unlock()
	r, err := redisproc.Start(ctx, redisproc.Config{Dir: dir, ReplicaOf: replicaOf,
		Args: []string{"maxmemory", "256mb", "databases", "4"}})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.redis = append(p.redis, r)
	p.mu.Unlock()
	if replicaOf != "" {
		if err := redisproc.WaitLinkUp(ctx, r.Addr, 10*time.Second); err != nil {
			return nil, err
		}
		if err := redisproc.WaitReplicating(ctx, replicaOf, 10*time.Second); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func (p *procs) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.children) - 1; i >= 0; i-- {
		p.children[i].stop()
	}
	for _, r := range p.redis {
		r.Kill()
	}
}

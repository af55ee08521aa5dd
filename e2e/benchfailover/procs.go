package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
)

// procs tracks everything the harness started, to stop it all at the end.
// Each child runs in a process group of its own, with its output in
// <dir>/<name>.log; stopping it ends that group and nothing else.
type procs struct {
	dir      string
	mu       sync.Mutex
	children []*procgroup.Proc
	redis    []*redisproc.Proc
	n        int
}

func (p *procs) child(name, bin string, args ...string) (*procgroup.Proc, error) {
	c, err := procgroup.StartLogged(exec.Command(bin, args...), name, filepath.Join(p.dir, name+".log"))
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
		p.children[i].Stop(3 * time.Second)
	}
	for _, r := range p.redis {
		r.Kill()
	}
}

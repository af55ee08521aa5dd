package redistest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redisproc"
)

// HAName is the name an HA group's Sentinels monitor its master under.
const HAName = "granary"

// HA is a Redis master with replicas under Sentinels, for tests of a
// metadb that fails over: every process on a free loopback port, each
// stopped (process group) when the test ends.
type HA struct {
	t         testing.TB
	Sentinels []string

	mu      sync.Mutex
	servers map[string]*Server // by address, the killed ones included
}

// StartHA starts a master, replicas replicas of it and sentinels Sentinels
// (quorum: a majority) that count a master down after 1.5s to 2s without
// an answer (redisproc.StaggeredDownAfter), and waits until the Sentinels
// know each other and the replicas.
func StartHA(t testing.TB, replicas, sentinels int) *HA {
	t.Helper()
	h := &HA{t: t, servers: map[string]*Server{}}
	m := Start(t)
	h.servers[m.Addr] = m
	for range replicas {
		r := StartReplica(t, m)
		h.servers[r.Addr] = r
	}
	for i := range sentinels {
		p, err := redisproc.StartSentinel(t.Context(), redisproc.SentinelConfig{Dir: t.TempDir(), MasterName: HAName,
			Master: m.Addr, Quorum: sentinels/2 + 1, DownAfter: redisproc.StaggeredDownAfter(i)})
		if err != nil {
			t.Fatalf("start sentinel: %v", err)
		}
		t.Cleanup(p.Kill)
		h.Sentinels = append(h.Sentinels, p.Addr)
		log := filepath.Join(p.Dir, fmt.Sprintf("sentinel-%d.log", p.Port))
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(log)
				t.Logf("sentinel %s log:\n%s", p.Addr, b)
			}
		})
	}
	if err := redisproc.WaitSentinels(t.Context(), h.Sentinels, HAName, replicas, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return h
}

// Master is the master's address as the first Sentinel that answers names it.
func (h *HA) Master(ctx context.Context) (string, error) {
	var last error
	for _, a := range h.Sentinels {
		m, err := redisproc.SentinelMaster(ctx, a, HAName)
		if err == nil {
			return m, nil
		}
		last = err
	}
	return "", last
}

// Server is the server at addr, nil if it is not one of h's.
func (h *HA) Server(addr string) *Server {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.servers[addr]
}

// KillMaster SIGKILLs the master's process group and returns its address.
func (h *HA) KillMaster(ctx context.Context) (string, error) {
	m, err := h.Master(ctx)
	if err != nil {
		return "", err
	}
	h.mu.Lock()
	s := h.servers[m]
	h.mu.Unlock()
	if s == nil {
		return "", fmt.Errorf("the sentinels name %s, not one of ours", m)
	}
	s.Kill()
	<-s.Done()
	return m, nil
}

// WaitFailover waits until every Sentinel names a master other than old
// and returns it.
func (h *HA) WaitFailover(old string, d time.Duration) string {
	h.t.Helper()
	var m string
	WaitFor(h.t, d, "the sentinels to promote a replica of "+old, func() bool {
		seen := ""
		for _, a := range h.Sentinels {
			got, err := redisproc.SentinelMaster(h.t.Context(), a, HAName)
			if err != nil || got == old || (seen != "" && got != seen) {
				return false
			}
			seen = got
		}
		m = seen
		return true
	})
	return m
}

// Rejoin restarts the killed server at addr, on its port, as a replica of
// the current master, and waits until the Sentinels see replicas healthy
// replicas again.
func (h *HA) Rejoin(addr string, replicas int) {
	h.t.Helper()
	h.mu.Lock()
	old := h.servers[addr]
	h.mu.Unlock()
	m, err := h.Master(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	p, err := redisproc.Start(h.t.Context(), redisproc.Config{Dir: h.t.TempDir(), Port: old.Port, ReplicaOf: m})
	if err != nil {
		h.t.Fatalf("restart %s as a replica of %s: %v", addr, m, err)
	}
	h.t.Cleanup(p.Kill)
	h.mu.Lock()
	h.servers[addr] = &Server{Proc: p}
	h.mu.Unlock()
	if err := redisproc.WaitLinkUp(h.t.Context(), p.Addr, 10*time.Second); err != nil {
		h.t.Fatal(err)
	}
	if err := redisproc.WaitSentinels(h.t.Context(), h.Sentinels, HAName, replicas, 20*time.Second); err != nil {
		h.t.Fatal(err)
	}
}

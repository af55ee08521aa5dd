package redisproc

import (
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestStartReplicateStop starts a master and a replica on free ports,
// checks that replication works, and that Kill leaves no process behind.
func TestStartReplicateStop(t *testing.T) {
	ctx := t.Context()
	m, err := Start(ctx, Config{Dir: t.TempDir(), Args: []string{"databases", "4"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Kill()
	r, err := Start(ctx, Config{Dir: t.TempDir(), ReplicaOf: m.Addr})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Kill()
	if err := WaitLinkUp(ctx, r.Addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := WaitReplicating(ctx, m.Addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mc := redis.NewClient(&redis.Options{Addr: m.Addr})
	defer mc.Close()
	if n, err := mc.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("master db 0 after the replication probe: %d keys, %v; want 0", n, err)
	}
	if got, _ := mc.ConfigGet(ctx, "databases").Result(); got["databases"] != "4" {
		t.Fatalf("databases: got %v, want 4", got["databases"])
	}
	pid := r.Pid()
	r.Kill()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("replica pid %d alive after Kill", pid)
	}
	select {
	case <-r.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
}

func TestStartFixedPortTaken(t *testing.T) {
	ctx := t.Context()
	a, err := Start(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Kill()
	if b, err := Start(ctx, Config{Dir: t.TempDir(), Port: a.Port}); err == nil {
		b.Kill()
		t.Fatalf("second server on taken port %d started, want an error", a.Port)
	}
}

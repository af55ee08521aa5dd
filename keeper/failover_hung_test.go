package keeper

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// TestKeeperFailsOverHungMaster stops the pair's master with SIGSTOP: its
// TCP connections stay open, so the replica's link reads "up" and the
// keeper's own view (probes timing out) is not enough to fail over. Once
// a proxy reports its request to the master unanswered (the report a
// proxy's heartbeat makes, Member.BackendStalled), the keeper promotes the
// replica within a few probes. The old master is fenced: resumed with
// SIGCONT, it refuses a write from a client that connects afterwards, and
// a write sent to it before the failover is never confirmed.
func TestKeeperFailsOverHungMaster(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ackedWrite(t, e)
	detect := time.Second
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		ProbeTimeout: 200 * time.Millisecond, DetectTime: detect, SizingSweep: time.Hour}
	k, _ := startKeeper(t, e.store, cfg)
	assignPair(t, e, "k1")
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the pair healthy", func() bool {
		h, ok := k.Health(e.pair.ID)
		return ok && h.Master.Up && h.Replica.LinkUp
	})
	// A "proxy" connection to the master, opened before it hangs.
	px := redis.NewClient(&redis.Options{Addr: e.master.Addr, DB: e.db.SlotDB, MaxRetries: -1, PoolSize: 1,
		ReadTimeout: 30 * time.Second, DisableIdentity: true})
	t.Cleanup(func() { px.Close() })
	if err := px.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _ = e.master.Signal(syscall.SIGCONT) })
	if err := e.master.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The keeper alone: past the detection time, with the replica's link
	// up and quiet, it still does not fail over.
	redistest.WaitFor(t, 10*time.Second, "the keeper to see the master down past detection, the replica quiet", func() bool {
		h, ok := k.Health(e.pair.ID)
		return ok && !h.Master.Up && time.Since(h.Master.LastOK) > detect+5*cfg.ProbeInterval &&
			h.Replica.LinkUp && h.Replica.LastIOSec >= 1
	})
	if p, _ := e.store.Pair(ctx, e.pair.ID); p.Master != e.master.Addr {
		t.Fatalf("failed over on the keeper's view alone: master %s", p.Master)
	}

	// The proxy's write and its confirmation hang; after the stall report
	// time its heartbeat says so.
	sent := time.Now()
	hung := make(chan []redis.Cmder, 1)
	go func() {
		cmds, _ := px.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "late", "1", 0)
			p.Do(ctx, "WAIT", 1, 100)
			return nil
		})
		hung <- cmds
	}()
	redistest.WaitFor(t, 5*time.Second, "the proxy's request to wait the stall report time", func() bool {
		return time.Since(sent) >= proxyStallMin
	})
	if err := e.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px",
		BackendStalled: map[string]time.Time{e.master.Addr: sent}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	reported := time.Now()
	redistest.WaitFor(t, 3*time.Second, "promotion", func() bool {
		p, _ := e.store.Pair(ctx, e.pair.ID)
		return p.Master == e.replica.Addr
	})
	t.Logf("promoted %v after the stall report", time.Since(reported).Round(time.Millisecond))
	if got := e.replica.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("promoted replica has %q for k, want the acknowledged write", got)
	}

	// The fence: the old master wakes up and refuses writes from a client
	// that connects afterwards, plain or scripted.
	if err := e.master.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	cmds := <-hung
	if n, err := cmds[1].(*redis.Cmd).Int64(); err == nil && n >= 1 {
		t.Fatalf("a write sent before the failover was confirmed by the old master (WAIT %d)", n)
	}
	late := e.master.ClientDB(t, e.db.SlotDB)
	if err := late.Set(ctx, "after", "1", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
		t.Fatalf("write to the resumed old master: %v, want NOREPLICAS", err)
	}
	if err := late.Eval(ctx, "return redis.call('set', KEYS[1], '1')", []string{"after"}).Err(); err == nil {
		t.Fatal("scripted write to the resumed old master accepted")
	}
	if n := late.Exists(ctx, "after").Val(); n != 0 {
		t.Fatal("the resumed old master holds a write made after it woke up")
	}
}

// TestFenceOldMasterUnreachable: fencing a server that does not answer
// fails at once (dead) and never blocks the promotion for long.
func TestFenceOldMasterUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	if err := fenceOldMaster(addr, 200*time.Millisecond); err == nil {
		t.Fatal("fenced a closed port")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("fence of a closed port took %v", d)
	}
}

// TestKeeperFailsOverIdleHungMaster: a hung master that nobody sends
// requests to gives no proxy witness; the watcher set it to ping its
// replica every second, so the replica's silence says it is gone after
// replicaSilenceFast instead of replicaSilence.
func TestKeeperFailsOverIdleHungMaster(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ackedWrite(t, e)
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		ProbeTimeout: 200 * time.Millisecond, DetectTime: time.Second, SizingSweep: time.Hour}
	k, _ := startKeeper(t, e.store, cfg)
	assignPair(t, e, "k1")
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the pair healthy and set the master's ping period", func() bool {
		h, ok := k.Health(e.pair.ID)
		return ok && h.Master.Up && h.Replica.LinkUp &&
			e.master.Client(t).ConfigGet(ctx, "repl-ping-replica-period").Val()["repl-ping-replica-period"] == fastPingPeriod
	})
	t.Cleanup(func() { _ = e.master.Signal(syscall.SIGCONT) })
	stopped := time.Now()
	if err := e.master.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "promotion", func() bool {
		p, _ := e.store.Pair(ctx, e.pair.ID)
		return p.Master == e.replica.Addr
	})
	took := time.Since(stopped)
	t.Logf("idle hung master failed over %v after the stop", took.Round(time.Millisecond))
	// master_last_io_seconds_ago counts whole seconds: 3 can read up to a
	// second early.
	if took < replicaSilenceFast-time.Second {
		t.Fatalf("failed over %v after the stop, before the replica's silence (%v) could say so", took, replicaSilenceFast)
	}
	if got := e.replica.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("promoted replica has %q for k, want the acknowledged write", got)
	}
}

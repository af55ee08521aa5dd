package metadb

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestSentinelFailover: a Store that finds the metadb through Sentinels
// follows a failover (the master SIGKILLed, its replica promoted): every
// write it acknowledged (confirmed by the replica with WAIT) is on the new
// master, the bus subscription comes back on its own and resyncs to the
// new master's version, the lease granted before the kill still belongs to
// its holder with the same fencing token, and the fence counter does not
// go back (a later holder gets a larger token).
func TestSentinelFailover(t *testing.T) {
	t.Parallel() // Sentinel waits long: these overlap
	ha := redistest.StartHA(t, 1, 3)
	s := openStore(t, Config{URL: "redis://ignored:1/0", Sentinels: ha.Sentinels, MasterName: redistest.HAName, Replicas: 1})
	ctx := testCtx(t)

	fa, ok, err := s.AcquireLeader(ctx, "A", time.Minute)
	if err != nil || !ok {
		t.Fatalf("A acquires: %v, %v", ok, err)
	}
	r := &recorder{load: versionLoader(s)}
	subscribe(t, s, r)
	var acked uint64
	for range 5 {
		if acked, err = s.Announce(ctx, fa, "A", banMsg("acme", 0)); err != nil {
			t.Fatalf("announce: %v", err)
		}
	}
	redistest.WaitFor(t, 5*time.Second, "the announcements on the bus", func() bool {
		v := r.versions()
		return len(v) > 0 && v[len(v)-1] == acked
	})
	_, before := r.snapshot()

	killed, err := ha.KillMaster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	promoted := ha.WaitFailover(killed, 20*time.Second)
	ha.Rejoin(killed, 1)
	var after uint64
	redistest.WaitFor(t, 20*time.Second, "a confirmed write on the new master", func() bool {
		after, err = s.Announce(ctx, fa, "A", banMsg("acme", 1))
		return err == nil
	})
	t.Logf("metadb %s killed, %s promoted; writes confirmed again after %v", killed, promoted, time.Since(start).Round(time.Millisecond))
	if after != acked+1 {
		t.Errorf("version after the failover: got %d, want %d (the last acknowledged one, %d, plus one)", after, acked+1, acked)
	}
	if got, _ := s.MasterAddr(ctx); got != promoted {
		t.Errorf("MasterAddr: got %q, want %q", got, promoted)
	}
	// The guards deny every metadb server: the Sentinels, the master, and
	// the old master, now a replica.
	addrs := s.MetadbAddrs(ctx)
	for _, want := range append([]string{promoted, killed}, ha.Sentinels...) {
		if !slices.Contains(addrs, want) {
			t.Errorf("MetadbAddrs: got %v, want %s among them", addrs, want)
		}
	}

	redistest.WaitFor(t, 10*time.Second, "the subscriber to resync and see the new version", func() bool {
		v := r.versions()
		_, rs := r.snapshot()
		return len(rs) > len(before) && len(v) > 0 && v[len(v)-1] == after
	})
	_, rs := r.snapshot()
	if got := rs[len(before)]; got < acked {
		t.Errorf("resync after the failover loaded version %d, want at least %d", got, acked)
	}

	// The lease crossed over: A still leads with its token, B is refused.
	if g, ok, err := s.AcquireLeader(ctx, "A", time.Minute); err != nil || !ok || g.Token != fa.Token {
		t.Fatalf("A renews on the new master: got %+v, %v, %v, want token %d", g, ok, err, fa.Token)
	}
	if _, ok, err := s.AcquireLeader(ctx, "B", time.Minute); err != nil || ok {
		t.Fatalf("B while A leads: got %v, %v, want false, nil", ok, err)
	}
	if err := s.ReleaseLeader(ctx, fa); err != nil {
		t.Fatal(err)
	}
	fb, ok, err := s.AcquireLeader(ctx, "B", time.Minute)
	if err != nil || !ok || fb.Token <= fa.Token {
		t.Fatalf("B after A released: got %+v, %v, %v, want a token above %d", fb, ok, err, fa.Token)
	}
	if _, err := s.Announce(ctx, fa, "A"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("write with A's old fence: got %v, want %v", err, ErrNotLeader)
	}
}

// TestUnconfirmedLeaseIsNoLease: a grant the replica did not confirm is
// reported as an error, so no master acts on a lease that a metadb
// failover could lose (and whose token could be handed out again).
func TestUnconfirmedLeaseIsNoLease(t *testing.T) {
	m, r := redistest.StartPair(t)
	s := openStore(t, Config{URL: "redis://" + m.Addr, Replicas: 1, ConfirmTimeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	if err := r.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	f, ok, err := s.AcquireLeader(ctx, "A", time.Minute)
	if !errors.Is(err, ErrNotConfirmed) || ok || f != nil {
		t.Fatalf("grant with the replica stopped: got %+v, %v, %v, want nil, false, %v", f, ok, err, ErrNotConfirmed)
	}
	if err := r.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Once the replica is back the same call leads (the unconfirmed grant
	// is renewed, with the token it had: it was never used).
	f, ok, err = s.AcquireLeader(ctx, "A", time.Minute)
	if err != nil || !ok {
		t.Fatalf("grant with the replica back: got %v, %v", ok, err)
	}
	if f.Token != 1 {
		t.Errorf("token: got %d, want 1", f.Token)
	}
}

// TestSentinelSwitchover: a failover with the old master alive (SENTINEL
// FAILOVER, or a partition that heals): go-redis drops the pooled
// connections to the old master when the Sentinels announce the new one,
// so writes go on after a few refused ones (READONLY); the bus
// subscription may stay on the old master, now a replica, which still
// gets every PUBLISH through replication, so the subscriber goes on
// seeing each new version.
func TestSentinelSwitchover(t *testing.T) {
	t.Parallel() // Sentinel waits long: these overlap
	ha := redistest.StartHA(t, 1, 3)
	s := openStore(t, Config{URL: "redis://ignored:1/0", Sentinels: ha.Sentinels, MasterName: redistest.HAName, Replicas: 1})
	ctx := testCtx(t)
	r := &recorder{load: versionLoader(s)}
	subscribe(t, s, r)
	old, err := s.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: ha.Sentinels[0]})
	defer sc.Close()
	if err := sc.Failover(ctx, redistest.HAName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	start := time.Now()
	promoted := ha.WaitFailover(old, 20*time.Second)
	switched := time.Since(start)
	var v uint64
	redistest.WaitFor(t, 20*time.Second, "a confirmed write on "+promoted, func() bool {
		v, err = s.Announce(ctx, nil, "test", banMsg("acme", 0))
		return err == nil
	})
	// With one replica, confirmed writes wait for the Sentinels to turn
	// the old master into a replica: they notice its role in its INFO,
	// which they read every 10 s.
	t.Logf("%s promoted after %v; a write confirmed after %v", promoted, switched.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	redistest.WaitFor(t, 10*time.Second, "the subscriber to see the new version", func() bool {
		vs := r.versions()
		_, rs := r.snapshot()
		return (len(vs) > 0 && vs[len(vs)-1] == v) || (len(rs) > 0 && rs[len(rs)-1] == v)
	})
}

// TestLeaseNotResurrected: a grant made on the metadb master but never
// replicated (its replica was cut off, so WAIT failed and the grant was an
// error) is lost when the master is cut off too and the Sentinels promote
// the replica: no one leads there, another master takes the lease, and
// when the old master comes back it is made a replica and its copy of the
// lost grant is replaced by the new master's data.
func TestLeaseNotResurrected(t *testing.T) {
	t.Parallel() // Sentinel waits long: these overlap
	ha := redistest.StartHA(t, 1, 3)
	s := openStore(t, Config{URL: "redis://ignored:1/0", Sentinels: ha.Sentinels, MasterName: redistest.HAName,
		Replicas: 1, ConfirmTimeout: 200 * time.Millisecond})
	ctx := testCtx(t)
	old, err := s.MasterAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var replica string
	for _, a := range s.MetadbAddrs(ctx) {
		if a != old && !slices.Contains(ha.Sentinels, a) {
			replica = a
		}
	}
	// Cut the replica off: it follows a port nobody listens on.
	rc := ha.Server(replica).Client(t)
	if err := rc.SlaveOf(ctx, "127.0.0.1", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.AcquireLeader(ctx, "A", time.Minute); !errors.Is(err, ErrNotConfirmed) || ok {
		t.Fatalf("A's grant with the replica cut off: got %v, %v, want false, %v", ok, err, ErrNotConfirmed)
	}
	oc := ha.Server(old).Client(t)
	if v, _ := oc.Get(ctx, keyLeader).Result(); v == "" {
		t.Fatal("the unconfirmed grant is not on the old master: the test shows nothing")
	}
	// The old master is cut off too (stopped, not killed: it keeps its data).
	if err := ha.Server(old).Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ha.Server(old).Signal(syscall.SIGCONT) })
	promoted := ha.WaitFailover(old, 30*time.Second)
	if promoted != replica {
		t.Fatalf("promoted %s, want %s", promoted, replica)
	}
	if l, err := s.Leader(ctx); err != nil || l != "" {
		t.Fatalf("leader on the promoted replica: %q, %v; want none", l, err)
	}
	// B's grant is confirmed once the old master follows the new one.
	if err := ha.Server(old).Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var fb *Fence
	redistest.WaitFor(t, 30*time.Second, "B to lead, confirmed", func() bool {
		f, ok, err := s.AcquireLeader(ctx, "B", time.Minute)
		fb = f
		return err == nil && ok
	})
	redistest.WaitFor(t, 30*time.Second, "the old master to hold B's lease, as a replica", func() bool {
		info, err := oc.Info(ctx, "replication").Result()
		v, _ := oc.Get(ctx, keyLeader).Result()
		return err == nil && strings.Contains(info, "role:slave") && v == fb.value()
	})
	if f, ok, err := s.AcquireLeader(ctx, "A", time.Minute); err != nil || ok {
		t.Fatalf("A after the failover: got %+v, %v, %v, want B to lead", f, ok, err)
	}
}

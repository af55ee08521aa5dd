package master

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

type cluster struct {
	store   *metadb.Store
	master  *redistest.Server
	replica *redistest.Server
	pair    *metadb.Pair
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	meta := redistest.Start(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m, r := redistest.StartPair(t, "maxmemory", "1gb", "databases", "4")
	ctx := t.Context()
	pair, err := store.AddPair(ctx, "64M", m.Addr, r.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	return &cluster{store: store, master: m, replica: r, pair: pair}
}

func startMaster(t *testing.T, store *metadb.Store, id string) context.CancelFunc {
	t.Helper()
	m, err := New(Config{ID: id, LeaseTTL: 600 * time.Millisecond, JobPoll: 10 * time.Millisecond}, store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func jobState(t *testing.T, s *metadb.Store, id string) *metadb.Job {
	j, err := s.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestCreateAndDropJobs(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	// A registered proxy that has applied nothing yet.
	proxy := metadb.Member{ID: "px1", Addr: "127.0.0.1:7001"}
	if err := c.store.Heartbeat(ctx, metadb.KindProxy, proxy, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Leftover data in the slot must not survive creation.
	c.master.ClientDB(t, 2).Set(ctx, "leftover", "x", 0)

	startMaster(t, c.store, "m1")
	db, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "job-create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create job done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	got, err := c.store.DB(ctx, "acme", db.Index)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != metadb.DBActive || got.ProxyAddr != proxy.Addr {
		t.Fatalf("db after create: state %q proxy %q, want active %q", got.State, got.ProxyAddr, proxy.Addr)
	}
	if n := c.master.ClientDB(t, got.SlotDB).DBSize(ctx).Val(); got.SlotDB == 2 && n != 0 {
		t.Fatalf("slot db size %d after create, want 0", n)
	}

	// Data written by the tenant, then a drop.
	c.master.ClientDB(t, got.SlotDB).Set(ctx, "k", "v", 0)
	drop, err := c.store.StartDrop(ctx, "acme", got.Index, "job-drop")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "drop at wait_acks", func() bool { return jobState(t, c.store, drop.ID).Step == metadb.StepWaitAcks })
	if n := c.master.ClientDB(t, got.SlotDB).DBSize(ctx).Val(); n != 1 {
		t.Fatalf("slot flushed before the proxy acknowledged: dbsize %d", n)
	}
	// The proxy acknowledges by reporting the version it applied.
	v, _ := c.store.Version(ctx)
	proxy.AppliedVersion = v
	if err := c.store.Heartbeat(ctx, metadb.KindProxy, proxy, time.Minute); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "drop job done", func() bool { return jobState(t, c.store, drop.ID).State == metadb.JobDone })
	if n := c.master.ClientDB(t, got.SlotDB).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("slot db size %d after drop, want 0", n)
	}
	if _, err := c.store.DB(ctx, "acme", got.Index); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("db after drop: err %v, want ErrNotFound", err)
	}
	free, _ := c.store.FreeSlots(ctx, c.pair.ID)
	if len(free) != 4 {
		t.Fatalf("free slots %v after drop, want all 4", free)
	}
}

func TestDropProceedsWhenProxyLeaseLapses(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	startMaster(t, c.store, "m1")
	_, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "job-create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	// A proxy that never acknowledges, with a short lease.
	if err := c.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "silent", Addr: "x:1"}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	drop, err := c.store.StartDrop(ctx, "acme", job.Index, "job-drop")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "drop done after the lease lapsed", func() bool { return jobState(t, c.store, drop.ID).State == metadb.JobDone })
}

func TestStandbyTakesOverAndResumes(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	stop1 := startMaster(t, c.store, "m1")
	redistest.WaitFor(t, 5*time.Second, "m1 leads", func() bool { id, _ := c.store.Leader(ctx); return id == "m1" })
	startMaster(t, c.store, "m2")

	// The pair master is paused: the create job cannot flush and stays running.
	if err := c.master.Signal(19); err != nil { // SIGSTOP
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.master.Signal(18) })
	_, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "job-create")
	if err != nil {
		t.Fatal(err)
	}
	stop1()
	redistest.WaitFor(t, 5*time.Second, "m2 leads", func() bool { id, _ := c.store.Leader(ctx); return id == "m2" })
	_ = c.master.Signal(18) // SIGCONT
	redistest.WaitFor(t, 15*time.Second, "job done under m2", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	j := jobState(t, c.store, job.ID)
	seen := map[metadb.Step]int{}
	for _, s := range j.Log {
		seen[s.Step]++
	}
	for step, n := range seen {
		if n != 1 {
			t.Fatalf("step %s recorded %d times, want once (log %+v)", step, n, j.Log)
		}
	}
}

// TestCreateSkipsDrainingProxy: a proxy that says in its lease it is
// draining gets no new db, though it serves the fewest.
func TestCreateSkipsDrainingProxy(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	for _, m := range []metadb.Member{{ID: "px-a", Addr: "127.0.0.1:7001", Draining: true}, {ID: "px-busy", Addr: "127.0.0.1:7002", Conns: 50}} {
		if err := c.store.Heartbeat(ctx, metadb.KindProxy, m, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	startMaster(t, c.store, "m1")
	db, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "job-create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create job done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	got, err := c.store.DB(ctx, "acme", db.Index)
	if err != nil {
		t.Fatal(err)
	}
	if got.Proxy != "px-busy" {
		t.Fatalf("db placed on proxy %q, want px-busy (px-a, idler and first by name, is draining)", got.Proxy)
	}
}

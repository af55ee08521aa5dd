package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

const leaseTTL = time.Second

// startMasters runs two master processes and returns them by id.
func startMasters(t *testing.T, metaAddr string) map[string]*procgroup.Proc {
	t.Helper()
	out := map[string]*procgroup.Proc{}
	for _, id := range []string{"ma", "mb"} {
		out[id] = startGranary(t, "master", "--metadb-url", "redis://"+metaAddr, "--id", id,
			"--lease", leaseTTL.String(), "--backend-timeout", "300ms")
	}
	return out
}

func leader(t *testing.T, s *metadb.Store) string {
	id, err := s.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// killLeader SIGKILLs the leading master and waits for the other to lead.
// It returns how long the cluster was without a leader, measured from the kill.
func killLeader(t *testing.T, s *metadb.Store, masters map[string]*procgroup.Proc) time.Duration {
	t.Helper()
	old := leader(t, s)
	if old == "" {
		t.Fatal("no leader to kill")
	}
	masters[old].Kill()
	killed := time.Now()
	redistest.WaitFor(t, 3*leaseTTL, "standby to lead", func() bool { id := leader(t, s); return id != "" && id != old })
	took := time.Since(killed)
	t.Logf("leader %s killed; %s leads after %v (lease %v)", old, leader(t, s), took, leaseTTL)
	if took > leaseTTL+leaseTTL/5 {
		t.Fatalf("standby took %v to lead, want within the lease time %v (+ one poll)", took, leaseTTL)
	}
	return took
}

func assertStepsOnce(t *testing.T, j *metadb.Job) {
	t.Helper()
	seen := map[metadb.Step]int{}
	for _, s := range j.Log {
		seen[s.Step]++
	}
	for step, n := range seen {
		if n != 1 {
			t.Fatalf("job %s: step %s recorded %d times, want once; log %+v", j.ID, step, n, j.Log)
		}
	}
}

// leaderKillCluster is a metadb with one 64M pair of 4 dbs, tenant acme and
// the masters of startMasters.
func leaderKillCluster(t *testing.T) (*metadb.Store, *redistest.Server, *metadb.Pair, map[string]*procgroup.Proc) {
	t.Helper()
	meta, store := metaStore(t)
	ctx := t.Context()
	pm, pr := redistest.StartPair(t, "maxmemory", "1gb", "databases", "4")
	pair, err := store.AddPair(ctx, "64M", pm.Addr, pr.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	masters := startMasters(t, meta.Addr)
	return store, pm, pair, masters
}

func TestLeaderKilledMidCreateJob(t *testing.T) {
	store, pm, pair, masters := leaderKillCluster(t)
	ctx := t.Context()
	redistest.WaitFor(t, 5*time.Second, "a leader", func() bool { return leader(t, store) != "" })

	// Freeze the pair master so the create job is stuck in its flush step.
	if err := pm.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pm.Signal(syscall.SIGCONT) })
	_, created, err := store.ClaimDB(ctx, "acme", pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the job to be attempted", func() bool { return job(t, store, created.ID).Attempts > 0 })
	killLeader(t, store, masters)
	if err := pm.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "the create job to finish", func() bool { return job(t, store, created.ID).State == metadb.JobDone })
	assertStepsOnce(t, job(t, store, created.ID))
	db, err := store.DB(ctx, "acme", created.Index)
	if err != nil || db.State != metadb.DBActive {
		t.Fatalf("db after create: %+v, %v; want active", db, err)
	}
	owners, _ := store.SlotOwners(ctx, pair.ID)
	free, _ := store.FreeSlots(ctx, pair.ID)
	if len(owners) != 1 || len(free) != 3 {
		t.Fatalf("owners %v free %v: want one owned slot and three free", owners, free)
	}
}

func TestLeaderKilledMidDropJob(t *testing.T) {
	store, pm, pair, masters := leaderKillCluster(t)
	ctx := t.Context()
	_, created, err := store.ClaimDB(ctx, "acme", pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "create done", func() bool { return job(t, store, created.ID).State == metadb.JobDone })
	db, _ := store.DB(ctx, "acme", created.Index)
	pm.ClientDB(t, db.SlotDB).Set(ctx, "k", "v", 0)

	// A proxy that has not acknowledged yet holds the drop at wait_acks.
	px := metadb.Member{ID: "px", Addr: "127.0.0.1:1"}
	if err := store.Heartbeat(ctx, metadb.KindProxy, px, time.Minute); err != nil {
		t.Fatal(err)
	}
	drop, err := store.StartDrop(ctx, "acme", created.Index, "drop-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "drop at wait_acks", func() bool { return job(t, store, drop.ID).Step == metadb.StepWaitAcks })
	killLeader(t, store, masters)
	px.AppliedVersion = job(t, store, drop.ID).Version
	if err := store.Heartbeat(ctx, metadb.KindProxy, px, time.Minute); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "drop done", func() bool { return job(t, store, drop.ID).State == metadb.JobDone })
	assertStepsOnce(t, job(t, store, drop.ID))
	if n := pm.ClientDB(t, db.SlotDB).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("slot db has %d keys after drop, want 0", n)
	}
	free, _ := store.FreeSlots(ctx, pair.ID)
	owners, _ := store.SlotOwners(ctx, pair.ID)
	if len(free) != 4 || len(owners) != 0 {
		t.Fatalf("free %v owners %v after drop: want all four free exactly once", free, owners)
	}
}

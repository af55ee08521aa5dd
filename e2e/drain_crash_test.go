package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestDrainCrash drains a pair of three dbs on separate `granary master` ×2
// and `granary keeper` processes, SIGKILLing the keeper and then the
// leading master once during each db's move (when that move's recorded
// step is copy, hold or switch, whichever is seen first from the one
// named), with replacements started. The drain must end done once, each
// db moved by exactly one resize job whose steps are each recorded once,
// every key on its new slot and none on the old, and no slot leaked.
func TestDrainCrash(t *testing.T) {
	meta, store := metaStore(t)
	ctx := t.Context()
	src, am := crashPair(t, store, "64M", "1gb")
	dst, bm := crashPair(t, store, "64M", "1gb")
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	rig := newCrashRig(t, meta.Addr, store)

	const keys = 20000
	var dbs []*metadb.DB
	for i := range 3 {
		_, created, err := store.ClaimDB(ctx, "acme", src, metadb.WriteConfirmed, 64<<20, 8, "create-"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 10*time.Second, "create done", func() bool { return job(t, store, created.ID).State == metadb.JobDone })
		db, _ := store.DB(ctx, "acme", created.Index)
		fillSlot(t, am.ClientDB(t, db.SlotDB), keys)
		dbs = append(dbs, db)
	}
	if _, _, err := store.StartDrain(ctx, src.ID, "drain-1"); err != nil {
		t.Fatal(err)
	}
	for round, target := range []metadb.Step{metadb.StepCopy, metadb.StepHold, metadb.StepSwitch} {
		rig.crashAt("drain-1-m"+strconv.Itoa(round), metadb.JobResize, target)
	}
	redistest.WaitFor(t, 120*time.Second, "the drain to finish", func() bool { return job(t, store, "drain-1").State != metadb.JobRunning })
	dj := job(t, store, "drain-1")
	if moved, total := metadb.DrainProgress(dj); dj.State != metadb.JobDone || moved != 3 || total != 3 {
		t.Fatalf("drain: %s (%s), %d/%d moved", dj.State, dj.Error, moved, total)
	}
	assertStepsOnce(t, dj)
	resizes := resizesOnce(t, store)
	for _, d := range dbs {
		if resizes[d.Index] != 1 {
			t.Fatalf("db %d moved by %d resize jobs, want 1", d.Index, resizes[d.Index])
		}
		after, _ := store.DB(ctx, "acme", d.Index)
		if after.Pair != dst.ID || after.State != metadb.DBActive || after.HoldJob != "" {
			t.Fatalf("db %d after the drain: %+v", d.Index, after)
		}
		if n := bm.ClientDB(t, after.SlotDB).DBSize(ctx).Val(); n != keys {
			t.Fatalf("db %d: new slot holds %d keys, want %d", d.Index, n, keys)
		}
		checkFill(t, bm.ClientDB(t, after.SlotDB), keys)
		if n := am.ClientDB(t, d.SlotDB).DBSize(ctx).Val(); n != 0 {
			t.Fatalf("db %d: old slot holds %d keys, want 0", d.Index, n)
		}
	}
	p, _ := store.Pair(ctx, src.ID)
	free, _ := store.FreeSlots(ctx, src.ID)
	owners, _ := store.SlotOwners(ctx, src.ID)
	if p.State != metadb.PairDrained || len(free) != 4 || len(owners) != 0 {
		t.Fatalf("drained pair: %+v, free %v, owners %v", p, free, owners)
	}
	dfree, _ := store.FreeSlots(ctx, dst.ID)
	downers, _ := store.SlotOwners(ctx, dst.ID)
	if len(dfree) != 1 || len(downers) != 3 {
		t.Fatalf("target pair: free %v owners %v, want 1 free and 3 owned", dfree, downers)
	}
}

// crashRig is the processes a crash test kills and replaces: two `granary
// master`s and a `granary keeper`, on metadb at metaAddr. The keeper
// measures every db each second (the rebalance's plan reads the sizes).
type crashRig struct {
	t                *testing.T
	store            *metadb.Store
	metaAddr         string
	masters          map[string]*procgroup.Proc
	keeper           *procgroup.Proc
	keeperN, masterN int
	keeperArgs       []string // more flags for every keeper it starts
}

func newCrashRig(t *testing.T, metaAddr string, store *metadb.Store) *crashRig {
	return newCrashRigWith(t, metaAddr, store)
}

// newCrashRigWith is newCrashRig whose keepers also get keeperArgs.
func newCrashRigWith(t *testing.T, metaAddr string, store *metadb.Store, keeperArgs ...string) *crashRig {
	r := &crashRig{t: t, store: store, metaAddr: metaAddr, masters: startMasters(t, metaAddr), keeperArgs: keeperArgs}
	r.startKeeper()
	return r
}

func (r *crashRig) startKeeper() {
	r.keeperN++
	r.keeper = startGranary(r.t, append([]string{"keeper", "--metadb-url", "redis://" + r.metaAddr, "--id", fmt.Sprintf("k%d", r.keeperN),
		"--lease", leaseTTL.String(), "--pairs-poll", "100ms", "--sizing-sweep", "1s"}, r.keeperArgs...)...)
}

// crashAt waits until job id (of kind) has recorded target or a later step
// (or ended), then SIGKILLs the keeper and then the leading master and
// starts replacements. It logs the step the job was seen at.
func (r *crashRig) crashAt(id string, kind metadb.JobKind, target metadb.Step) {
	r.t.Helper()
	_, ti, _ := metadb.StepOf(kind, target)
	var at metadb.Step
	redistest.WaitFor(r.t, 60*time.Second, id+" at "+string(target)+" or later", func() bool {
		j, err := r.store.Job(r.t.Context(), id)
		if err != nil {
			return false
		}
		at = j.Step
		_, i, _ := metadb.StepOf(kind, j.Step)
		return j.State != metadb.JobRunning || i >= ti
	})
	r.keeper.Kill()
	killLeader(r.t, r.store, r.masters)
	r.t.Logf("killed the keeper and the leader with %s at %s (aimed at %s)", id, at, target)
	replaceDeadMasters(r.t, r.masters, r.metaAddr, &r.masterN)
	r.startKeeper()
}

// resizesOnce checks that every resize job ended done with each step
// recorded once, and counts them per db index.
func resizesOnce(t *testing.T, store *metadb.Store) map[int]int {
	t.Helper()
	jobs, err := store.Jobs(t.Context(), 100)
	if err != nil {
		t.Fatal(err)
	}
	resizes := map[int]int{}
	for _, j := range jobs {
		if j.Kind == metadb.JobResize {
			resizes[j.Index]++
			if j.State != metadb.JobDone {
				t.Fatalf("move %s: %s (%s)", j.ID, j.State, j.Error)
			}
			assertStepsOnce(t, j)
		}
	}
	return resizes
}

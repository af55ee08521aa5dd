package e2e

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestRebalanceCrash rebalances a 64M pool of two pairs, one holding dbs of
// about 6, 6, 2 and 2 MB (measured by the keeper) and one empty, on
// separate `granary master` ×2 and `granary keeper` processes, SIGKILLing
// the keeper and then the leading master at each step: once as the job
// starts (plan), then inside the moves, with the first move at copy and at
// switch and the second at hold (whichever step is seen first from the
// one named), with replacements started. The rebalance must end done once
// with each step recorded once, its plan of two moves (a 6 and a 2 MB db,
// which even the pairs) carried out by exactly one resize job each, every
// key on its db's slot and none left on an old slot, each slot owned by
// one db and the rest free.
func TestRebalanceCrash(t *testing.T) {
	meta, store := metaStore(t)
	ctx := t.Context()
	a, am := crashPair(t, store, "64M", "1gb")
	b, bm := crashPair(t, store, "64M", "1gb")
	servers := map[string]*redistest.Server{a.ID: am, b.ID: bm}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	rig := newCrashRig(t, meta.Addr, store)

	// fillSlot's keys take about 280 bytes each.
	sizes := []int{22000, 22000, 7500, 7500}
	var dbs []*metadb.DB
	keys := map[int]int{} // db index -> keys
	for i, n := range sizes {
		_, created, err := store.ClaimDB(ctx, "acme", a, metadb.WriteConfirmed, 64<<20, 8, "create-"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 10*time.Second, "create done", func() bool { return job(t, store, created.ID).State == metadb.JobDone })
		db, _ := store.DB(ctx, "acme", created.Index)
		fillSlot(t, am.ClientDB(t, db.SlotDB), n)
		dbs = append(dbs, db)
		keys[db.Index] = n
	}
	// The plan reads the keeper's measurements: wait for all four.
	redistest.WaitFor(t, 60*time.Second, "the dbs measured", func() bool {
		for i, d := range dbs {
			cur, err := store.DB(ctx, "acme", d.Index)
			if err != nil || cur.UsedBytes < int64(sizes[i])*200 {
				return false
			}
		}
		return true
	})

	if _, _, err := store.StartRebalance(ctx, "64M", "rebalance-1"); err != nil {
		t.Fatal(err)
	}
	rig.crashAt("rebalance-1", metadb.JobRebalance, metadb.StepPlan)
	rig.crashAt("rebalance-1-m0", metadb.JobResize, metadb.StepCopy)
	rig.crashAt("rebalance-1-m0", metadb.JobResize, metadb.StepSwitch)
	rig.crashAt("rebalance-1-m1", metadb.JobResize, metadb.StepHold)
	redistest.WaitFor(t, 120*time.Second, "the rebalance to finish", func() bool {
		return job(t, store, "rebalance-1").State != metadb.JobRunning
	})

	rj := job(t, store, "rebalance-1")
	if moved, total := metadb.DrainProgress(rj); rj.State != metadb.JobDone || moved != 2 || total != 2 {
		t.Fatalf("rebalance: %s (%s), %d/%d moved, plan %q", rj.State, rj.Error, moved, total, rj.Data[metadb.DrainPlan])
	}
	assertStepsOnce(t, rj)
	want := map[int]string{} // db index -> pair, as planned
	for _, d := range dbs {
		want[d.Index] = a.ID
	}
	for _, mv := range strings.Split(rj.Data[metadb.DrainPlan], ",") {
		o, to, _ := strings.Cut(mv, ">")
		idx, _ := strconv.Atoi(strings.TrimPrefix(o, "acme/"))
		want[idx] = to
	}
	resizes := resizesOnce(t, store)
	var movedKeys []int
	used := map[string]int64{}
	for _, d := range dbs {
		after, _ := store.DB(ctx, "acme", d.Index)
		moves := 0
		if want[d.Index] != a.ID {
			moves = 1
			movedKeys = append(movedKeys, keys[d.Index])
		}
		if resizes[d.Index] != moves {
			t.Fatalf("db %d moved by %d resize jobs, want %d", d.Index, resizes[d.Index], moves)
		}
		if after.Pair != want[d.Index] || after.State != metadb.DBActive || after.HoldJob != "" {
			t.Fatalf("db %d after the rebalance: %+v, want it on %s", d.Index, after, want[d.Index])
		}
		slot := servers[after.Pair].ClientDB(t, after.SlotDB)
		if n := slot.DBSize(ctx).Val(); n != int64(keys[d.Index]) {
			t.Fatalf("db %d: its slot holds %d keys, want %d", d.Index, n, keys[d.Index])
		}
		checkFill(t, slot, keys[d.Index])
		if moves == 1 {
			if n := am.ClientDB(t, d.SlotDB).DBSize(ctx).Val(); n != 0 {
				t.Fatalf("db %d: old slot holds %d keys, want 0", d.Index, n)
			}
		}
		used[after.Pair] += int64(keys[d.Index])
	}
	slices.Sort(movedKeys)
	if !slices.Equal(movedKeys, []int{7500, 22000}) {
		t.Fatalf("moved dbs of %v keys, want one of each size (plan %q)", movedKeys, rj.Data[metadb.DrainPlan])
	}
	if used[a.ID] != used[b.ID] {
		t.Fatalf("keys per pair after the rebalance: %v, want them even", used)
	}
	// Each slot is owned once, by the db on it, and the others are free.
	for _, p := range []*metadb.Pair{a, b} {
		free, _ := store.FreeSlots(ctx, p.ID)
		owners, _ := store.SlotOwners(ctx, p.ID)
		if len(free) != 2 || len(owners) != 2 {
			t.Fatalf("pair %s: free %v, owners %v; want 2 and 2", p.ID, free, owners)
		}
		for slot, o := range owners {
			idx, _ := strconv.Atoi(strings.TrimPrefix(o, "acme/"))
			if d, _ := store.DB(ctx, "acme", idx); d == nil || d.Pair != p.ID || strconv.Itoa(d.SlotDB) != slot {
				t.Fatalf("pair %s slot %s owned by %s, which is at %+v", p.ID, slot, o, d)
			}
			if n, _ := strconv.Atoi(slot); slices.Contains(free, n) {
				t.Fatalf("pair %s slot %s is both free and owned", p.ID, slot)
			}
		}
	}
}

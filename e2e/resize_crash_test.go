package e2e

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// crashPair starts a pair of 4 dbs with maxmemory mem and adds it to pool
// size; it returns the pair and its master.
func crashPair(t *testing.T, store *metadb.Store, size, mem string) (*metadb.Pair, *redistest.Server) {
	t.Helper()
	m, r := redistest.StartPair(t, "maxmemory", mem, "databases", "4")
	p, err := store.AddPair(t.Context(), size, m.Addr, r.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// replaceDeadMasters starts a master, named m<n> with n counting on from
// *n, for each one of masters that has exited.
func replaceDeadMasters(t *testing.T, masters map[string]*procgroup.Proc, metaAddr string, n *int) {
	t.Helper()
	for old, p := range masters {
		select {
		case <-p.Done():
			delete(masters, old)
			*n++
			nid := fmt.Sprintf("m%d", *n)
			masters[nid] = startGranary(t, "master", "--metadb-url", "redis://"+metaAddr, "--id", nid,
				"--lease", leaseTTL.String(), "--backend-timeout", "300ms")
		default:
		}
	}
}

// TestResizeCrashAtEachStep runs one resize per step of the job (growing
// and shrinking in turn) on separate `granary master` ×2 and `granary
// keeper` processes, and SIGKILLs the keeper, then the leading master, when
// the job's recorded step is that step; replacements are started. Every
// job must complete exactly once (each step once in its log), every key
// must be on the new slot and none on the old one, and no slot may leak.
//
// A fake proxy member that has not acknowledged anything holds the job at
// hold and at flush_old until it is released; catchup is held by
// freezing (SIGSTOP) the source pair's master. The other steps are caught
// by polling the job; a step that passes before the kill is reported.
func TestResizeCrashAtEachStep(t *testing.T) {
	meta, store := metaStore(t)
	ctx := t.Context()
	small, sm := crashPair(t, store, "64M", "1gb")
	big, bm := crashPair(t, store, "256M", "2gb")
	servers := map[string]*redistest.Server{small.ID: sm, big.ID: bm}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	masters := startMasters(t, meta.Addr)
	keeperN := 0
	startKeeper := func() *procgroup.Proc {
		keeperN++
		return startGranary(t, "keeper", "--metadb-url", "redis://"+meta.Addr, "--id", fmt.Sprintf("k%d", keeperN),
			"--lease", leaseTTL.String(), "--pairs-poll", "100ms")
	}
	keeper := startKeeper()
	masterN := 0

	_, created, err := store.ClaimDB(ctx, "acme", small, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "create done", func() bool { return job(t, store, created.ID).State == metadb.JobDone })

	// The data: 20,000 keys of 200 bytes.
	const keys = 20000
	db, _ := store.DB(ctx, "acme", created.Index)
	fillSlot(t, sm.ClientDB(t, db.SlotDB), keys)

	px := metadb.Member{ID: "px", Addr: "127.0.0.1:1"}
	gate := func(applied uint64) {
		px.AppliedVersion = applied
		if err := store.Heartbeat(ctx, metadb.KindProxy, px, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	sizes := []string{"256M", "64M"}
	for i, spec := range metadb.Steps(metadb.JobResize) {
		step := spec.Name
		size := sizes[i%2]
		quota := int64(256 << 20)
		if size == "64M" {
			quota = 64 << 20
		}
		before, _ := store.DB(ctx, "acme", created.Index)
		gate(0)
		src := servers[before.Pair]
		id := "resize-" + strconv.Itoa(i)
		if _, err := store.StartResize(ctx, "acme", created.Index, size, quota, id); err != nil {
			t.Fatal(err)
		}
		frozen := false
		switch step {
		case metadb.StepCatchup:
			redistest.WaitFor(t, 30*time.Second, "job at hold", func() bool { return job(t, store, id).Step == metadb.StepHold })
			if err := src.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			frozen = true
			gate(1 << 40)
		case metadb.StepFlushOld, metadb.StepFreeOld:
			// Acknowledge the hold but not the switch.
			var hv uint64
			redistest.WaitFor(t, 30*time.Second, "job at hold", func() bool {
				j := job(t, store, id)
				d, _ := store.DB(ctx, "acme", created.Index)
				hv = j.Version
				return j.Step == metadb.StepHold && d.HoldJob == id && hv > 0
			})
			gate(hv)
			if step == metadb.StepFreeOld {
				redistest.WaitFor(t, 30*time.Second, "job at flush_old", func() bool { return job(t, store, id).Step == metadb.StepFlushOld })
				gate(1 << 40)
			}
		case metadb.StepSwitch:
			redistest.WaitFor(t, 30*time.Second, "job at hold", func() bool { return job(t, store, id).Step == metadb.StepHold })
			gate(1 << 40)
		}
		deadline := time.Now().Add(30 * time.Second)
		var at metadb.Step
		for {
			j := job(t, store, id)
			at = j.Step
			if j.Step == step || j.State != metadb.JobRunning || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		keeper.Kill()
		killLeader(t, store, masters)
		t.Logf("round %d (%s to %s): killed the keeper and the leader at step %s", i, before.Size, size, at)
		if at != step {
			t.Logf("round %d: step %s passed before the kill; killed at %s", i, step, at)
		}
		if frozen {
			if err := src.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		replaceDeadMasters(t, masters, meta.Addr, &masterN)
		keeper = startKeeper()
		gate(1 << 40)
		redistest.WaitFor(t, 60*time.Second, "the resize to finish", func() bool { return job(t, store, id).State != metadb.JobRunning })
		j := job(t, store, id)
		if j.State != metadb.JobDone {
			t.Fatalf("round %d: job %+v, want done", i, j)
		}
		assertStepsOnce(t, j)
		after, _ := store.DB(ctx, "acme", created.Index)
		if after.Size != size || after.State != metadb.DBActive || after.Pair == before.Pair || after.HoldJob != "" {
			t.Fatalf("round %d: db after resize %+v", i, after)
		}
		if n := servers[after.Pair].ClientDB(t, after.SlotDB).DBSize(ctx).Val(); n != keys {
			t.Fatalf("round %d: new slot holds %d keys, want %d", i, n, keys)
		}
		checkFill(t, servers[after.Pair].ClientDB(t, after.SlotDB), keys)
		if n := src.ClientDB(t, before.SlotDB).DBSize(ctx).Val(); n != 0 {
			t.Fatalf("round %d: old slot holds %d keys, want 0", i, n)
		}
		for _, p := range []*metadb.Pair{small, big} {
			free, _ := store.FreeSlots(ctx, p.ID)
			owners, _ := store.SlotOwners(ctx, p.ID)
			want := 4
			if p.ID == after.Pair {
				want = 3
			}
			if len(free) != want || len(free)+len(owners) != 4 {
				t.Fatalf("round %d: pair %s free %v owners %v, want %d free and no leak", i, p.ID, free, owners, want)
			}
		}
	}
}

func fillSlot(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	for i := 0; i < n; i += 1000 {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+1000, n); j++ {
				p.Set(ctx, "k:"+strconv.Itoa(j), fillValue(j), 0)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func fillValue(i int) string { return fmt.Sprintf("%0200d", i) }

func checkFill(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	for i := 0; i < n; i += 1000 {
		keys := make([]string, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			keys = append(keys, "k:"+strconv.Itoa(j))
		}
		vals, err := c.MGet(ctx, keys...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range vals {
			if v != fillValue(i+j) {
				t.Fatalf("key %s: %v after the resize", keys[j], v)
			}
		}
	}
}

package master

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
)

// TestResizeJobSteps drives a resize with the test playing the keeper:
// the master reserves a 256M slot, holds the db's writes once the copy is
// recorded, switches when the catch-up is recorded, flushes and frees the
// old slot. A hold that lapsed before the switch sends the job back to
// hold and catch-up instead of switching.
func TestResizeJobSteps(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	bm, br := redistest.StartPair(t, "maxmemory", "2gb", "databases", "4")
	big, err := c.store.AddPair(ctx, "256M", bm.Addr, br.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{ID: "m1", LeaseTTL: 600 * time.Millisecond, JobPoll: 10 * time.Millisecond, HoldTime: 2 * time.Second},
		c.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = m.Run(mctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	_, created, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, created.ID).State == metadb.JobDone })
	db, _ := c.store.DB(ctx, "acme", created.Index)
	c.master.ClientDB(t, db.SlotDB).Set(ctx, "k", "v", 0)

	if _, err := c.store.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-1"); err != nil {
		t.Fatal(err)
	}
	at := func(step metadb.Step) {
		t.Helper()
		redistest.WaitFor(t, 5*time.Second, "job at "+string(step), func() bool { return jobState(t, c.store, "resize-1").Step == step })
	}
	advance := func(from, to metadb.Step) {
		t.Helper()
		if _, err := c.store.UpdateJob(ctx, nil, "resize-1", func(j *metadb.Job) error {
			j.Log = append(j.Log, metadb.JobStep{Step: from, By: "test"})
			j.Step = to
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	at(metadb.StepCopy)
	j := jobState(t, c.store, "resize-1")
	tp, ts, ok := metadb.ResizeTarget(j)
	if !ok || tp != big.ID {
		t.Fatalf("target %s/%d, want a slot of %s", tp, ts, big.ID)
	}
	advance(metadb.StepCopy, metadb.StepHold)
	at(metadb.StepCatchup)
	held, _ := c.store.DB(ctx, "acme", db.Index)
	if held.HoldJob != "resize-1" || time.Until(time.Unix(0, held.HoldUntil)) <= 0 {
		t.Fatalf("db at catchup: hold %q until %v, want a live hold", held.HoldJob, time.Unix(0, held.HoldUntil))
	}
	// The hold names the target, for the proxies' subscribers.
	if r := metadb.RouteOf(held, c.pair); r.HoldTargetMaster != bm.Addr || int(r.HoldTargetDb) != ts {
		t.Fatalf("route at catchup: hold target %s/%d, want %s/%d", r.HoldTargetMaster, r.HoldTargetDb, bm.Addr, ts)
	}

	// The hold lapses before the switch: back to hold, then catch-up.
	if _, err := c.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.HoldUntil = time.Now().UnixNano()
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	advance(metadb.StepCatchup, metadb.StepSwitch)
	at(metadb.StepCatchup)
	if d, _ := c.store.DB(ctx, "acme", db.Index); d.Pair != c.pair.ID || time.Until(time.Unix(0, d.HoldUntil)) <= 0 {
		t.Fatalf("after a lapsed hold: db on %s, hold until %v; want still on the old slot, held again", d.Pair, time.Unix(0, d.HoldUntil))
	}
	advance(metadb.StepCatchup, metadb.StepSwitch)
	redistest.WaitFor(t, 5*time.Second, "resize done", func() bool { return jobState(t, c.store, "resize-1").State == metadb.JobDone })

	after, _ := c.store.DB(ctx, "acme", db.Index)
	if after.Pair != big.ID || after.SlotDB != ts || after.Size != "256M" || after.QuotaBytes != 256<<20 ||
		after.State != metadb.DBActive || after.HoldJob != "" || after.Job != "" {
		t.Fatalf("db after resize: %+v", after)
	}
	if n := c.master.ClientDB(t, db.SlotDB).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("old slot holds %d keys, want it flushed", n)
	}
	free, _ := c.store.FreeSlots(ctx, c.pair.ID)
	bigFree, _ := c.store.FreeSlots(ctx, big.ID)
	if len(free) != 4 || len(bigFree) != 3 {
		t.Fatalf("free slots: 64M %v, 256M %v; want 4 and 3", free, bigFree)
	}
}

// TestResizeRefusedWhenPoolFull: with no free slot in the target pool the
// reserve step fails the job and the db stays active where it was.
func TestResizeRefusedWhenPoolFull(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	startMaster(t, c.store, "m1")
	_, created, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, created.ID).State == metadb.JobDone })
	if _, err := c.store.StartResize(ctx, "acme", created.Index, "256M", 256<<20, "resize-1"); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "job failed", func() bool { return jobState(t, c.store, "resize-1").State == metadb.JobFailed })
	if d, _ := c.store.DB(ctx, "acme", created.Index); d.State != metadb.DBActive || d.Pair != c.pair.ID {
		t.Fatalf("db after a refused resize: %+v", d)
	}
	if got, want := jobState(t, c.store, "resize-1").Error, "no free 256M db: the pool is full"; got != want {
		t.Fatalf("job error: got %q, want %q", got, want)
	}
}

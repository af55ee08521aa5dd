package proxy

import (
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// TestHoldFromSnapshot: a hold recorded in metadb reaches a proxy that
// reloads its snapshot (a restart, a reconnect, a version gap) without ever
// seeing the WriteHold message: writes to the db wait, and are released by
// the switch's RouteChanged + WriteHold(false).
func TestHoldFromSnapshot(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	ctx := e.ctx
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Record the hold without announcing it, as if the message was lost.
	if _, err := e.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.HoldJob, d.HoldUntil = "resize-1", time.Now().Add(10*time.Second).UnixNano()
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.resync(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d != nil && d.hold != nil && d.hold.job == "resize-1" })
	done := make(chan error, 1)
	go func() { done <- c.Set(ctx, "held", "1", 0).Err() }()
	// Once its client waits in the hold, the write cannot return before
	// the snapshot changes or the hold's deadline (10s) passes.
	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	e.waitFor("the write queued", func() bool {
		select {
		case err := <-done:
			t.Fatalf("write during a hold found in the snapshot returned: %v", err)
		default:
		}
		return st.held.Load() > 0
	})
	if e.slot(db).Exists(ctx, "held").Val() != 0 {
		t.Fatal("a held write reached the slot")
	}
	_, err := e.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.HoldJob, d.HoldUntil = "", 0
		return []*buspb.Envelope{
			{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(d, e.pair)}}},
			{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{Tenant: "acme", Index: uint32(d.Index), Hold: false, Job: "resize-1"}}},
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("released write: %v", err)
	}
	if e.slot(db).Get(ctx, "held").Val() != "1" {
		t.Fatal("released write missing")
	}
}

// TestAbortedResizeReleasesHold: a resize aborted while its hold is set
// (a copy that failed verification, a drain cut short) releases the hold
// on the bus in the same transaction: the held write goes through at once
// on the old slot, and later writes are not refused once the hold's
// deadline has passed.
func TestAbortedResizeReleasesHold(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	ctx := e.ctx
	if _, err := e.store.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	if _, err := e.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.HoldJob, d.HoldUntil = "resize-1", deadline.UnixNano()
		return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{
			Tenant: "acme", Index: uint32(d.Index), Hold: true, Job: "resize-1", DeadlineUnixNanos: deadline.UnixNano()}}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d != nil && d.hold != nil })
	done := make(chan error, 1)
	go func() { done <- c.Set(ctx, "held", "1", 0).Err() }()
	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	e.waitFor("the write queued", func() bool { return st.held.Load() > 0 })
	if err := e.store.AbortResize(ctx, nil, "resize-1", "test abort"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("held write after the abort: %v", err)
		}
	case <-time.After(time.Until(deadline)):
		t.Fatal("the abort did not release the hold: the write waited for the deadline")
	}
	e.waitFor("the hold's deadline passed", func() bool { return time.Now().After(deadline) })
	if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
		t.Fatalf("write after the aborted hold's deadline: %v", err)
	}
	if e.slot(db).Get(ctx, "held").Val() != "1" || e.slot(db).Get(ctx, "after").Val() != "1" {
		t.Fatal("writes missing from the old slot")
	}
}

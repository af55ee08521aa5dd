package proxy

import (
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// TestHungMasterReportAndFailover stops the master with SIGSTOP under a
// write: the proxy's heartbeat reports the master stalled (the keepers'
// witness of a hung master) once the write has waited the stall report
// time, and a Failover message fails the write at once instead of leaving
// it to the backend timeout; the next write goes to the new master.
func TestHungMasterReportAndFailover(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.BackendTimeout = time.Minute })
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	// The client waits as long as the proxy does: only the proxy may end
	// the hung write.
	c := redis.NewClient(&redis.Options{Addr: e.addr, Username: "acme", Password: pass, DB: db.Index,
		ReadTimeout: time.Minute, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	ctx := e.ctx
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	stalledOn := func() (time.Time, time.Time) {
		ms, err := e.store.LiveMembers(ctx, metadb.KindProxy)
		if err != nil || len(ms) != 1 {
			return time.Time{}, time.Time{}
		}
		return ms[0].BackendStalled[e.master.Addr], ms[0].Reported
	}
	if s, _ := stalledOn(); !s.IsZero() {
		t.Fatalf("a healthy master reported stalled since %v", s)
	}

	t.Cleanup(func() { _ = e.master.Signal(syscall.SIGCONT) })
	if err := e.master.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	hung := make(chan error, 1)
	go func() { hung <- c.Set(ctx, "hung", "1", 0).Err() }()
	e.waitFor("the master reported stalled", func() bool {
		s, at := stalledOn()
		return !s.IsZero() && at.Sub(s) >= e.p.cfg.StallReport
	})
	s, _ := stalledOn()
	if s.Before(sent.Add(-50*time.Millisecond)) || time.Since(s) > 10*time.Second {
		t.Fatalf("stalled since %v, the write was sent at %v", s, sent)
	}

	// The failover, as the keeper records it.
	if err := e.replica.Client(t).Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error {
		p.Master, p.Replica = e.replica.Addr, ""
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Announce(ctx, nil, "test", &buspb.Envelope{Payload: &buspb.Envelope_Failover{Failover: &buspb.Failover{
		Pair: e.pair.ID, OldMaster: e.master.Addr, NewMaster: e.replica.Addr}}}); err != nil {
		t.Fatal(err)
	}
	var err error
	redistest.WaitFor(t, 3*time.Second, "the hung write to fail", func() bool {
		select {
		case err = <-hung:
			return true
		default:
			return false
		}
	})
	if err == nil {
		t.Fatal("a write to the hung old master was acknowledged")
	}
	if err := c.Set(ctx, "after", "2", 0).Err(); err != nil {
		t.Fatalf("write after the failover: %v", err)
	}
	if got := e.replica.ClientDB(t, db.SlotDB).Get(ctx, "after").Val(); got != "2" {
		t.Fatalf("new master has %q for the write after the failover", got)
	}
	e.waitFor("the stall report cleared", func() bool {
		s, _ := stalledOn()
		return s.IsZero()
	})
}

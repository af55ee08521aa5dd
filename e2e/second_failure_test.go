package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestSecondFailureHeals: the pair's master is SIGKILLed with no spare in
// the pool, so the promoted replica is left without one; then the new
// master is SIGKILLed too, and restarted by its supervisor with its
// append-only file (persistence on the replica, the recommended setup).
// The keeper makes it the pair's replication source again (it has the
// data; there is no other copy), a spare added afterwards is attached on
// its own, and no write acknowledged by the proxy, before or between the
// failures, is missing on the healed pair's master or replica.
func TestSecondFailureHeals(t *testing.T) {
	c := startPairCluster(t, 0)
	ctx := t.Context()
	p := c.waitWatched()
	rs := c.servers[p.Replica]
	if err := rs.Client(t).ConfigSet(ctx, "appendonly", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "the replica's append-only file written", func() bool {
		s := rs.Client(t).Info(ctx, "persistence").Val()
		return strings.Contains(s, "aof_enabled:1\r") && strings.Contains(s, "aof_rewrite_in_progress:0\r") &&
			strings.Contains(s, "aof_rewrite_scheduled:0\r")
	})
	w := c.startWriters(4)
	if err := w.Flowing(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.servers[p.Master].Kill()
	redistest.WaitFor(t, 10*time.Second, "the replica promoted", func() bool { return c.pair().Master == p.Replica })
	n := w.Count()
	// Writes go on (refused for want of a replica, or degraded) until the
	// second failure.
	redistest.WaitFor(t, 15*time.Second, "attempts on the promoted replica", func() bool { return w.Count() > n || w.Fails() > 0 })
	before, _ := c.store.ReplAuth(ctx, c.pairID)
	rs.Kill()
	restarted, err := redisproc.Start(ctx, redisproc.Config{Dir: rs.Dir, Port: rs.Port,
		Args: []string{"maxmemory", "256mb", "databases", "4", "appendonly", "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.Kill)
	rs = &redistest.Server{Proc: restarted}
	c.servers[rs.Addr] = rs
	redistest.WaitFor(t, 15*time.Second, "the restarted master made the pair's source again", func() bool {
		ra, err := c.store.ReplAuth(ctx, c.pairID)
		return err == nil && ra.Master == rs.Addr && (before == nil || ra.RunID != before.RunID)
	})
	spare := redistest.Start(t, "maxmemory", "256mb", "databases", "4")
	c.servers[spare.Addr] = spare
	if err := c.store.AddSpare(ctx, spare.Addr); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 30*time.Second, "the spare attached", func() bool {
		pp := c.pair()
		return pp.Master == rs.Addr && pp.Replica == spare.Addr && pp.State == metadb.PairActive && !pp.WritesDegraded
	})
	n = w.Count()
	redistest.WaitFor(t, 15*time.Second, "confirmed writes on the healed pair", func() bool { return w.Count() >= n+100 })
	total, acked := w.Halt()
	lost := c.lost(acked)
	if wn, err := rs.Client(t).Wait(ctx, 1, 2*time.Second).Result(); err != nil || wn != 1 {
		t.Fatalf("WAIT 1 on the healed pair: %d, %v", wn, err)
	}
	onReplica := 0
	sc := spare.ClientDB(t, c.db.SlotDB)
	for key := range acked {
		if sc.Exists(ctx, key).Val() == 1 {
			onReplica++
		}
	}
	t.Logf("second failure: %d writes acknowledged, %d lost on the master, %d of them on the new replica; %d failed attempts",
		total, lost, onReplica, w.Fails())
	if lost != 0 || onReplica != len(acked) {
		t.Fatalf("%d acknowledged writes lost on the master, %d missing on the replica", lost, len(acked)-onReplica)
	}
}

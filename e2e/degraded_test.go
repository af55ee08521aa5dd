package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// TestDegradedWritesHeal: a pair fails over with no spare in the pool.
// Confirmed writes are refused while the pair has no replica, then, after
// the master's --degrade-after, acknowledged without one, and the tenant
// is told (db.writes_degraded in its audit stream; the operator gets
// spares.empty once). A spare added later is attached on its own: the
// writes are confirmed again (db.writes_confirmed), and every write
// acknowledged before and while degraded is on the new master and on the
// new replica.
func TestDegradedWritesHeal(t *testing.T) {
	const degradeAfter = 2 * time.Second
	c := startSizedCluster(t, 0, pools.Size64M, "--degrade-after", degradeAfter.String())
	ctx := t.Context()
	cl := c.client()
	acked := map[string]int{}
	write := func(key string) error {
		err := cl.Set(ctx, key, "1", 0).Err()
		if err == nil {
			acked[key] = 1
		}
		return err
	}
	if err := write("before"); err != nil {
		t.Fatal(err)
	}
	p := c.waitWatched()
	c.servers[p.Master].Kill()
	killed := time.Now()
	redistest.WaitFor(t, 10*time.Second, "the replica promoted", func() bool { return c.pair().Master == p.Replica })

	var refused error
	n := 0
	redistest.WaitFor(t, 10*time.Second, "a write refused for want of a replica", func() bool {
		n++
		refused = write(fmt.Sprintf("refused-%d", n))
		return refused != nil && strings.Contains(refused.Error(), "Not enough good replicas")
	})
	var degradedAt time.Time
	redistest.WaitFor(t, 10*time.Second+degradeAfter, "writes acknowledged without a replica", func() bool {
		n++
		if write(fmt.Sprintf("degraded-%d", n)) != nil {
			return false
		}
		degradedAt = time.Now()
		return true
	})
	t.Logf("writes refused (%v), then acknowledged degraded %v after the kill (--degrade-after %v)",
		refused, degradedAt.Sub(killed).Round(time.Millisecond), degradeAfter)
	if degradedAt.Sub(killed) < degradeAfter {
		t.Fatalf("writes degraded %v after the kill, before --degrade-after %v", degradedAt.Sub(killed), degradeAfter)
	}
	for i := 0; i < 100; i++ {
		if err := write(fmt.Sprintf("degraded-more-%d", i)); err != nil {
			t.Fatalf("degraded write %d: %v", i, err)
		}
	}
	if !c.pair().WritesDegraded {
		t.Fatal("pair not recorded as degraded")
	}
	auditCount := func(tenant, action string) int {
		entries, _, err := c.store.AuditLog(ctx, metadb.AuditQuery{Tenant: tenant, Action: action})
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	if got := auditCount("acme", metadb.AuditWritesDegraded); got != 1 {
		t.Fatalf("acme's db.writes_degraded entries: %d, want 1", got)
	}
	if got := auditCount("", metadb.AuditSparesEmpty); got != 1 {
		t.Fatalf("spares.empty entries: %d, want 1", got)
	}

	spare := redistest.Start(t, "maxmemory", "256mb", "databases", "4")
	c.servers[spare.Addr] = spare
	if err := c.store.AddSpare(ctx, spare.Addr); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "the spare attached and writes confirmed again", func() bool {
		pp := c.pair()
		return pp.Replica == spare.Addr && !pp.WritesDegraded
	})
	redistest.WaitFor(t, 10*time.Second, "a confirmed write through the proxy", func() bool { return write("after") == nil })
	if got := auditCount("acme", metadb.AuditWritesConfirmed); got != 1 {
		t.Fatalf("acme's db.writes_confirmed entries: %d, want 1", got)
	}
	if lost := c.lost(acked); lost != 0 {
		t.Fatalf("%d of %d acknowledged writes missing on the master", lost, len(acked))
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := c.servers[c.pair().Master].Client(t).Wait(wctx, 1, 2*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 on the healed pair: %d, %v", n, err)
	}
	rc := spare.ClientDB(t, c.db.SlotDB)
	for key := range acked {
		if rc.Exists(ctx, key).Val() != 1 {
			t.Fatalf("acknowledged %s missing on the new replica", key)
		}
	}
	t.Logf("%d acknowledged writes (before, degraded, after) on the healed pair's master and replica", len(acked))
}

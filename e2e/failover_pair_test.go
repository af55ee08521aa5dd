package e2e

import (
	"context"
	"fmt"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/failoverload"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// Failover of a pair's master (DESIGN.md, "Failover"). `granary master`,
// `granary keeper` and `granary proxy` run as processes; the tenant and its
// db are made directly in metadb (no API needed); the pair's and the
// spares' redis-servers are children of the test, so it can kill them.
// (`granary dev` cannot host these tests: it stops when a Redis child dies.)

// pairDetect is the keeper's --detect-time.
const pairDetect = time.Second

type pairCluster struct {
	t       *testing.T
	store   *metadb.Store
	servers map[string]*redistest.Server // by address: pair servers and spares
	pairID  string
	db      *metadb.DB
	proxy   string
}

// startPairCluster starts a 64M pair of 4 dbs, spares, and the granary
// master, keeper (1 s detection) and proxy, then creates one confirmed db.
func startPairCluster(t *testing.T, spares int) *pairCluster {
	t.Helper()
	return startSizedCluster(t, spares, pools.Size64M)
}

// startSizedCluster is startPairCluster with a pool of the given size.
func startSizedCluster(t *testing.T, spares int, size pools.Size) *pairCluster {
	t.Helper()
	meta, store := metaStore(t)
	ctx := context.Background()
	args := []string{"maxmemory", "256mb", "databases", "4"}
	pm, pr := redistest.StartPair(t, args...)
	c := &pairCluster{t: t, store: store, servers: map[string]*redistest.Server{pm.Addr: pm, pr.Addr: pr}}
	pair, err := store.AddPair(ctx, size.String(), pm.Addr, pr.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	c.pairID = pair.ID
	for i := 0; i < spares; i++ {
		s := redistest.Start(t, args...)
		c.servers[s.Addr] = s
		if err := store.AddSpare(ctx, s.Addr); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	url := "redis://" + meta.Addr
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c.proxy = fmt.Sprintf("127.0.0.1:%d", port)
	startGranary(t, "master", "--metadb-url", url, "--id", "m1", "--lease", "1s", "--backend-timeout", "500ms")
	startGranary(t, "keeper", "--metadb-url", url, "--id", "k1", "--lease", "1s", "--detect-time", pairDetect.String())
	startGranary(t, "proxy", "--metadb-url", url, "--id", "px", "--addr", c.proxy)
	_, job, err := store.ClaimDB(ctx, "acme", pair, metadb.WriteConfirmed, size.Bytes(), 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "db created", func() bool { j, _ := store.Job(ctx, job.ID); return j != nil && j.State == metadb.JobDone })
	redistest.WaitFor(t, 20*time.Second, "keeper assigned", func() bool { p := c.pair(); return p.Keeper == "k1" })
	c.db, err = store.DB(ctx, "acme", job.Index)
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "the proxy to serve the db", func() bool {
		return c.client().Set(ctx, "ready", "1", 0).Err() == nil
	})
	return c
}

func (c *pairCluster) pair() *metadb.Pair {
	p, err := c.store.Pair(context.Background(), c.pairID)
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// waitWatched waits until the keeper's health report shows the pair's
// current master up and its replica linked to it, so a kill is seen from
// its first moment, and returns the pair.
func (c *pairCluster) waitWatched() *metadb.Pair {
	var p *metadb.Pair
	redistest.WaitFor(c.t, 10*time.Second, "the keeper to watch the pair", func() bool {
		p = c.pair()
		h, err := c.store.PairHealth(context.Background(), c.pairID)
		return err == nil && h.Master.Addr == p.Master && h.Master.Up && h.Replica.Addr == p.Replica && h.Replica.LinkUp
	})
	return p
}

// client is a tenant client of the proxy that does not retry, so every
// failure is seen.
func (c *pairCluster) client() *redis.Client {
	cl := redis.NewClient(&redis.Options{Addr: c.proxy, Username: "acme", Password: "pw", DB: c.db.Index,
		MaxRetries: -1, PoolSize: 1, DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// startWriters starts n clients of the proxy doing confirmed writes of
// unique keys, remembering every acknowledged one.
func (c *pairCluster) startWriters(n int) *failoverload.Writers {
	fns := make([]failoverload.WriteFunc, n)
	for i := range fns {
		cl := c.client()
		fns[i] = func(ctx context.Context, key, value string) error { return cl.Set(ctx, key, value, 0).Err() }
	}
	return failoverload.Start(c.t.Context(), 0, fns...)
}

// lost counts acknowledged writes that the pair's current master does not
// hold.
func (c *pairCluster) lost(acked map[string]int) int {
	rc := c.servers[c.pair().Master].ClientDB(c.t, c.db.SlotDB)
	n, err := failoverload.Lost(c.t.Context(), rc, acked)
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// TestPairFailoverNoAckedWriteLost SIGKILLs the pair's master three times
// while four clients do confirmed writes through the proxy: each time the
// replica is promoted, the proxy follows, a spare becomes the new replica,
// and in the end every acknowledged write is on the master.
func TestPairFailoverNoAckedWriteLost(t *testing.T) {
	const rounds = 3
	c := startPairCluster(t, rounds)
	w := c.startWriters(4)
	var unavail []time.Duration
	for round := 1; round <= rounds; round++ {
		before := c.waitWatched()
		if err := w.Flowing(t.Context(), 10*time.Second); err != nil {
			t.Fatalf("round %d: writes not flowing before the kill: %v", round, err)
		}
		killAt := w.MarkKill()
		c.servers[before.Master].Kill()
		redistest.WaitFor(t, 20*time.Second, "failover and a new replica", func() bool {
			p := c.pair()
			return p.Master == before.Replica && p.Replica != "" && p.State == metadb.PairActive && !w.Back().IsZero()
		})
		after := c.pair()
		took := w.Back().Sub(killAt)
		unavail = append(unavail, took)
		t.Logf("round %d: killed master %s; %s promoted, spare %s attached; writes unavailable for %v (%s)",
			round, before.Master, after.Master, after.Replica, took.Round(time.Millisecond), c.replaceTimeline(killAt))
		if c.servers[after.Replica] == nil || after.Replica == before.Master {
			t.Fatalf("round %d: new replica %s is not one of the spares", round, after.Replica)
		}
		if d, _ := c.store.Demoted(context.Background()); !contains(d, before.Master) {
			t.Fatalf("round %d: old master %s not demoted: %v", round, before.Master, d)
		}
	}
	// Writes go on on the final pair before the check.
	n := w.Count()
	redistest.WaitFor(t, 10*time.Second, "writes on the final pair", func() bool { return w.Count() >= n+100 })
	total, acked := w.Halt()
	lost := c.lost(acked)
	sort.Slice(unavail, func(i, j int) bool { return unavail[i] < unavail[j] })
	med := unavail[len(unavail)/2]
	t.Logf("failover: %d kills, %d acknowledged writes, %d lost, %d failed attempts; unavailability median %v (max %v, target < 2s with %v detection)",
		rounds, total, lost, w.Fails(), med.Round(time.Millisecond), unavail[len(unavail)-1].Round(time.Millisecond), pairDetect)
	if lost != 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	if med > 4*time.Second {
		t.Fatalf("median write unavailability %v, want well under 4s (target 2s)", med)
	}
}

// replaceTimeline says when, after killAt, the last replace job's steps
// were recorded.
func (c *pairCluster) replaceTimeline(killAt time.Time) string {
	jobs, err := c.store.Jobs(context.Background(), 1)
	if err != nil || len(jobs) == 0 || jobs[0].Kind != metadb.JobReplace {
		return "no replace job"
	}
	out := ""
	for _, st := range jobs[0].Log {
		at, err := time.Parse(time.RFC3339Nano, st.At)
		if err != nil {
			continue
		}
		out += fmt.Sprintf("%s +%v ", st.Step, at.Sub(killAt).Round(time.Millisecond))
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPairNoSplitBrain: a master frozen for less than the detection time is
// not failed over; nor is one that the keeper cannot reach while the
// replica still replicates from it; a real outage is.
func TestPairNoSplitBrain(t *testing.T) {
	c := startPairCluster(t, 1)
	ctx := context.Background()
	orig := c.waitWatched()
	m := c.servers[orig.Master]

	// 1. SIGSTOP for half the detection time.
	if err := m.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pairDetect / 2)
	if err := m.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * pairDetect)
	if p := c.pair(); p.Master != orig.Master || p.Replica != orig.Replica {
		t.Fatalf("a master frozen for %v was failed over: %+v", pairDetect/2, p)
	}

	// 2. The keeper is cut off from the master (no new connection is
	// accepted, the keeper's are closed) while the replica's link stays up.
	ctl := m.Client(t)
	conn := ctl.Conn()
	defer conn.Close()
	if err := conn.ConfigSet(ctx, "maxclients", "2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Do(ctx, "CLIENT", "KILL", "TYPE", "normal").Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the master down", func() bool {
		h, err := c.store.PairHealth(ctx, c.pairID)
		return err == nil && !h.Master.Up
	})
	time.Sleep(3 * pairDetect)
	h, _ := c.store.PairHealth(ctx, c.pairID)
	if p := c.pair(); p.Master != orig.Master || p.Replica != orig.Replica {
		t.Fatalf("a keeper cut off from a master its replica still sees failed over: %+v", p)
	}
	if h.Master.Up || !h.Replica.LinkUp {
		t.Fatalf("test did not cut the keeper off alone: master up %v, replica link up %v", h.Master.Up, h.Replica.LinkUp)
	}
	t.Logf("keeper cut off for %v (master down in its view since %v): no failover", 3*pairDetect, h.Master.Since)
	if err := conn.ConfigSet(ctx, "maxclients", "10000").Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the master again", func() bool {
		h, err := c.store.PairHealth(ctx, c.pairID)
		return err == nil && h.Master.Up
	})
	conn.Close()

	// 3. A real outage fails over.
	m.Kill()
	killed := time.Now()
	redistest.WaitFor(t, 15*time.Second, "failover", func() bool { return c.pair().Master == orig.Replica })
	t.Logf("master killed: failed over after %v", time.Since(killed).Round(time.Millisecond))
	redistest.WaitFor(t, 15*time.Second, "the spare attached", func() bool { return c.pair().Replica != "" })
	// Until the proxy applies the new route, a confirmed write is refused
	// with NOREPLICAS ("retry shortly"); the proxy acknowledges the
	// topology version it applied in its heartbeat.
	v, err := c.store.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the proxy to apply the new route", func() bool {
		ms, err := c.store.Members(ctx, metadb.KindProxy, time.Minute)
		return err == nil && len(ms) == 1 && ms[0].AppliedVersion >= v
	})
	if err := c.client().Set(ctx, "after", "1", 0).Err(); err != nil {
		t.Fatalf("confirmed write after failover: %v", err)
	}
}

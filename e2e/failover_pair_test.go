package e2e

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/failoverload"
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

// startSizedCluster is startPairCluster with a pool of the given size and
// extra flags for the master.
func startSizedCluster(t *testing.T, spares int, size pools.Size, masterFlags ...string) *pairCluster {
	t.Helper()
	meta, store := metaStore(t)
	ctx := t.Context()
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
	startGranary(t, append([]string{"master", "--metadb-url", url, "--id", "m1", "--lease", "1s", "--backend-timeout", "500ms"}, masterFlags...)...)
	startGranary(t, "keeper", "--metadb-url", url, "--id", "k1", "--lease", "1s", "--detect-time", pairDetect.String())
	_, c.proxy = startGranaryListening(t, "--addr", "proxy", "--metadb-url", url, "--id", "px")
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
	p, err := c.store.Pair(c.t.Context(), c.pairID)
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
		h, err := c.store.PairHealth(c.t.Context(), c.pairID)
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
		if d, _ := c.store.Demoted(t.Context()); !contains(d, before.Master) {
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
	jobs, err := c.store.Jobs(c.t.Context(), 1)
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

// assertNoFailover fails the test if the pair's record, or its replica's
// own INFO replication, shows that orig's replica was promoted.
func (c *pairCluster) assertNoFailover(orig *metadb.Pair, what string) {
	c.t.Helper()
	if p := c.pair(); p.Master != orig.Master || p.Replica != orig.Replica {
		c.t.Fatalf("%s was failed over: %+v", what, p)
	}
	_, port, _ := net.SplitHostPort(orig.Master)
	info, err := c.servers[orig.Replica].Client(c.t).Info(c.t.Context(), "replication").Result()
	if err != nil {
		c.t.Fatal(err)
	}
	if !strings.Contains(info, "role:slave\r\n") || !strings.Contains(info, "master_port:"+port+"\r\n") {
		c.t.Fatalf("%s: the replica no longer follows %s:\n%s", what, orig.Master, info)
	}
}

// TestPairNoSplitBrain: a master frozen for less than the detection time is
// not failed over; nor is one that the keeper cannot reach while the
// replica still replicates from it; a real outage is.
//
// "Not failed over" is checked once the keeper has made the decision that
// would have failed over: it decides after every probe and writes its
// health report after the decision, so a report shows that the decision
// on the probe it records has been made.
func TestPairNoSplitBrain(t *testing.T) {
	c := startPairCluster(t, 1)
	ctx := t.Context()
	orig := c.waitWatched()
	m := c.servers[orig.Master]

	// 1. SIGSTOP until the keeper has seen the master down, then SIGCONT
	// at once: its probe interval and timeout (250 + 500 ms) add up to
	// less than the detection time, so the master is back before the
	// outage in the keeper's view reaches it.
	stopAt := time.Now()
	if err := m.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, pairDetect, "the keeper to see the frozen master down", func() bool {
		h, err := c.store.PairHealth(ctx, c.pairID)
		return err == nil && !h.Master.Up && h.Master.Since.After(stopAt)
	})
	if err := m.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	redistest.WaitFor(t, 5*time.Second, "the keeper's decision on the resumed master", func() bool {
		h, err := c.store.PairHealth(ctx, c.pairID)
		return err == nil && h.Master.Up && h.Master.LastOK.After(resumed)
	})
	c.assertNoFailover(orig, fmt.Sprintf("a master frozen for %v", resumed.Sub(stopAt).Round(time.Millisecond)))
	t.Logf("master frozen for %v, until the keeper saw it down: no failover", resumed.Sub(stopAt).Round(time.Millisecond))

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
	// A report written at least the detection time after the master's
	// last good probe, then a later one: the decisions between them were
	// made with the master down for the detection time.
	var past, h *metadb.PairHealth
	redistest.WaitFor(t, 10*time.Second, "a keeper decision with the master down for the detection time", func() bool {
		r, err := c.store.PairHealth(ctx, c.pairID)
		if err != nil {
			return false
		}
		if past == nil {
			if !r.Master.Up && r.At.Sub(r.Master.LastOK) >= pairDetect {
				past = r
			}
			return false
		}
		h = r
		return r.At.After(past.At)
	})
	c.assertNoFailover(orig, "a master cut off from the keeper alone")
	if h.Master.Up || !h.Replica.LinkUp {
		t.Fatalf("test did not cut the keeper off alone: master up %v, replica link up %v", h.Master.Up, h.Replica.LinkUp)
	}
	t.Logf("keeper cut off for %v since the master's last good probe: no failover", h.At.Sub(h.Master.LastOK).Round(time.Millisecond))
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

package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/e2e/resizeload"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// TestRebalanceUnderLoad: the dev cluster's 64M pair holds a 12 MB db and
// two 2 MB ones, each under confirmed writes; a second pair joins the pool
// and a rebalance moves the one db that evens them best (the 12 MB one)
// to it: one move, no error, no stale read, no lost write.
func TestRebalanceUnderLoad(t *testing.T) {
	_, c, _ := startDev(t)
	ctx := t.Context()
	var dbs []*loadedDB
	for _, mb := range []int64{2, 12, 2} {
		r := call(t, "POST", c.API+"/v1/dbs", c.Demo.Token, map[string]string{"size": "64M"})
		if r.status != 201 || r.body["state"] != "active" {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		index := int(r.body["index"].(float64))
		rc := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: index,
			PoolSize: 8, ReadTimeout: 5 * time.Second, MaxRetries: -1})
		t.Cleanup(func() { rc.Close() })
		if _, err := resizeload.Fill(ctx, rc, mb<<20, 1000); err != nil {
			t.Fatal(err)
		}
		// The keeper's measurement is what the plan reads.
		redistest.WaitFor(t, 30*time.Second, "db measured", func() bool {
			u, _ := call(t, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, index), c.Demo.Token, nil).body["used_bytes"].(float64)
			return int64(u) >= mb<<20
		})
		dbs = append(dbs, &loadedDB{index: index, rc: rc, w: &resizeload.Writer{Clients: 4, Rate: 100, Keys: 100, Timeout: 5 * time.Second}})
	}
	m, r := redistest.StartPair(t, "maxmemory", "1gb", "databases", "16")
	added := call(t, "POST", c.API+"/v1/admin/pools/64M/pairs", c.AdminToken, map[string]string{"master": m.Addr, "replica": r.Addr, "dbs": "0-15"})
	if added.status != 201 {
		t.Fatalf("add pair: %d %s", added.status, added.raw)
	}
	dst := added.body["id"].(string)

	stop := runLoads(t, dbs)
	rb := call(t, "POST", c.API+"/v1/admin/pools/64M/rebalance", c.AdminToken, nil)
	if rb.status != 202 {
		t.Fatalf("rebalance: %d %s", rb.status, rb.raw)
	}
	jobID := rb.body["job"].(string)
	var jv map[string]any
	redistest.WaitFor(t, 120*time.Second, "the rebalance to finish", func() bool {
		jv = call(t, "GET", c.API+"/v1/admin/jobs/"+jobID, c.AdminToken, nil).body
		return jv["state"] != "running"
	})
	for _, d := range dbs {
		sofar := d.w.Stats().Writes
		redistest.WaitFor(t, 30*time.Second, "writes after the rebalance", func() bool { return d.w.Stats().Writes >= sofar+100 })
	}
	stop()
	if jv["state"] != metadb.JobDone || jv["dbs_total"] != float64(1) || jv["dbs_moved"] != float64(1) {
		t.Fatalf("rebalance job: %v", jv)
	}
	for i, d := range dbs {
		st := d.w.Stats()
		lost, err := d.w.Lost(ctx, d.rc)
		if err != nil {
			t.Fatal(err)
		}
		db := call(t, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, d.index), c.Demo.Token, nil).body
		pair := db["slot"].(map[string]any)["pair"]
		t.Logf("db %d (%.1f MB): on %s; %d writes, %d errors, %d stale, %d lost, longest write stall %v",
			d.index, db["used_bytes"].(float64)/(1<<20), pair, st.Writes, st.Errors, st.Stale, lost, st.MaxStall)
		if st.Errors != 0 || st.Stale != 0 || lost != 0 {
			t.Errorf("db %d: errors %d (first %v), stale %d, lost %d: want none", d.index, st.Errors, st.FirstErr, st.Stale, lost)
		}
		if (i == 1) != (pair == dst) {
			t.Errorf("db %d is on %s after the rebalance; want only the 12 MB db on %s", d.index, pair, dst)
		}
	}
}

// loadedDB is a tenant db with the confirmed-write load the drain and
// rebalance tests run on it.
type loadedDB struct {
	index int
	rc    *redis.Client
	w     *resizeload.Writer
}

// runLoads starts every db's load, waits until each has 100 writes
// acknowledged, and returns what stops them all and waits for them; it is
// also called at cleanup, once.
func runLoads(t *testing.T, dbs []*loadedDB) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{}, len(dbs))
	for _, d := range dbs {
		go func() { d.w.Run(ctx, d.rc); done <- struct{}{} }()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			for range dbs {
				<-done
			}
		})
	}
	t.Cleanup(stop)
	for _, d := range dbs {
		redistest.WaitFor(t, 30*time.Second, "the load to run", func() bool { return d.w.Stats().Writes >= 100 })
	}
	return stop
}

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/granary-db/granary/e2e/resizeload"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// drainDBs is how many dbs the drain test puts on the pair it drains;
// GRANARY_DRAIN_DBS overrides the default 10.
func drainDBs() int {
	if v, err := strconv.Atoi(os.Getenv("GRANARY_DRAIN_DBS")); err == nil && v > 0 {
		return v
	}
	return 10
}

type drainPairView struct {
	ID, State string
	Free, DBs int
}

func drainPairs(t *testing.T, c *devCluster) map[string]drainPairView {
	t.Helper()
	var ps []struct {
		Size  string
		Pairs []drainPairView
	}
	if err := json.Unmarshal(call(t, "GET", c.API+"/v1/admin/pools", c.AdminToken, nil).raw, &ps); err != nil {
		t.Fatal(err)
	}
	out := map[string]drainPairView{}
	for _, p := range ps {
		for _, pr := range p.Pairs {
			out[pr.ID] = pr
		}
	}
	return out
}

// TestDrainUnderLoad drains the 64M pair of `granary dev` holding several
// dbs, each under confirmed writes read back at once, onto a second 64M
// pair: no error, no stale read, no lost write, each db's longest write
// stall during its cut-over under 100 ms; at the end the pair owns no db
// and is drained. The refusals (unknown pair, the last active pair of the
// pool, a drained pair) change nothing.
func TestDrainUnderLoad(t *testing.T) {
	_, c, devDir := startDev(t)
	ctx := t.Context()
	n := drainDBs()
	var src string
	var ps []poolView
	_ = json.Unmarshal(call(t, "GET", c.API+"/v1/admin/pools", c.AdminToken, nil).raw, &ps)
	for _, p := range ps {
		if p.Size == "64M" && len(p.Pairs) == 1 {
			src = p.Pairs[0].ID
		}
	}
	if src == "" {
		t.Fatalf("no single 64M pair in %+v", ps)
	}

	dbs := make([]*loadedDB, n)
	for i := range dbs {
		r := call(t, "POST", c.API+"/v1/dbs", c.Demo.Token, map[string]string{"size": "64M"})
		if r.status != 201 || r.body["state"] != "active" || r.body["slot"].(map[string]any)["pair"] != src {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
		index := int(r.body["index"].(float64))
		rc := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: index,
			PoolSize: 8, ReadTimeout: 5 * time.Second, MaxRetries: -1})
		t.Cleanup(func() { rc.Close() })
		if _, err := resizeload.Fill(ctx, rc, 2<<20, 1000); err != nil {
			t.Fatal(err)
		}
		dbs[i] = &loadedDB{index: index, rc: rc, w: &resizeload.Writer{Clients: 4, Rate: 100, Keys: 100, Timeout: 5 * time.Second}}
	}

	refused := func(path string, status int) {
		t.Helper()
		before := drainPairs(t, c)
		if r := call(t, "POST", c.API+path, c.AdminToken, nil); r.status != status {
			t.Fatalf("POST %s: %d %s, want %d", path, r.status, r.raw, status)
		} else {
			t.Logf("POST %s: %d %s", path, r.status, r.body["error"])
		}
		if after := drainPairs(t, c); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("refused POST %s changed the pools: %v -> %v", path, before, after)
		}
	}
	refused("/v1/admin/pairs/p999/drain", 404)
	refused("/v1/admin/pairs/"+src+"/drain", 409) // the last active 64M pair

	m, r := redistest.StartPair(t, "maxmemory", "1gb", "databases", "16")
	added := call(t, "POST", c.API+"/v1/admin/pools/64M/pairs", c.AdminToken, map[string]string{"master": m.Addr, "replica": r.Addr, "dbs": "0-15"})
	if added.status != 201 {
		t.Fatalf("add pair: %d %s", added.status, added.raw)
	}
	dst := added.body["id"].(string)
	// The new pair's keeper is assigned before the drain starts.
	redistest.WaitFor(t, 30*time.Second, "a keeper for "+dst, func() bool {
		var v []struct{ Pairs []struct{ ID, Keeper string } }
		_ = json.Unmarshal(call(t, "GET", c.API+"/v1/admin/pools", c.AdminToken, nil).raw, &v)
		for _, p := range v {
			for _, pr := range p.Pairs {
				if pr.ID == dst && pr.Keeper != "" {
					return true
				}
			}
		}
		return false
	})

	stop := runLoads(t, dbs)

	start := time.Now()
	// Started with the CLI: granary admin pairs drain ID.
	code, out, errs := granaryCLI(t, t.TempDir(), devDir, "admin", "pairs", "drain", src, "-o", "json")
	var dr struct{ Job string }
	if code != 0 || json.Unmarshal([]byte(out), &dr) != nil || dr.Job == "" {
		t.Fatalf("granary admin pairs drain %s: exit %d\nstdout: %s\nstderr: %s", src, code, out, errs)
	}
	jobID := dr.Job
	if again := call(t, "POST", c.API+"/v1/admin/pairs/"+src+"/drain", c.AdminToken, nil); again.status != 200 || again.body["job"] != jobID {
		t.Fatalf("second drain: %d %s, want 200 with job %s", again.status, again.raw, jobID)
	}
	var jv map[string]any
	redistest.WaitFor(t, 180*time.Second, "the drain job to finish", func() bool {
		jv = call(t, "GET", c.API+"/v1/admin/jobs/"+jobID, c.AdminToken, nil).body
		return jv["state"] != "running"
	})
	took := time.Since(start)
	// Writes go on after the last move: another second's worth each.
	for _, d := range dbs {
		sofar := d.w.Stats().Writes
		redistest.WaitFor(t, 30*time.Second, "writes after the drain", func() bool { return d.w.Stats().Writes >= sofar+100 })
	}
	stop()
	if jv["state"] != metadb.JobDone || jv["dbs_moved"] != float64(n) || jv["dbs_total"] != float64(n) {
		t.Fatalf("drain job: %v", jv)
	}
	t.Logf("drain of %d dbs took %v", n, took)

	// The moves are jobs <drain>-m<k>, k in plan (slot) order.
	moves := map[int]map[string]any{}
	for k := range n {
		mv := call(t, "GET", fmt.Sprintf("%s/v1/admin/jobs/%s-m%d", c.API, jobID, k), c.AdminToken, nil).body
		if mv["state"] != metadb.JobDone || mv["kind"] != string(metadb.JobResize) {
			t.Fatalf("move %d: %v", k, mv)
		}
		moves[int(mv["index"].(float64))] = mv
	}
	var worst time.Duration
	for _, d := range dbs {
		st := d.w.Stats()
		lost, err := d.w.Lost(ctx, d.rc)
		if err != nil {
			t.Fatal(err)
		}
		mv := moves[d.index]
		if mv == nil {
			t.Fatalf("no move of db %d", d.index)
		}
		at := map[metadb.Step]time.Time{}
		for _, s := range mv["log"].([]any) {
			e := s.(map[string]any)
			at[metadb.Step(e["step"].(string))], _ = time.Parse(time.RFC3339Nano, e["at"].(string))
		}
		cut := d.w.MaxStallIn(at[metadb.StepCopy], at[metadb.StepSwitch])
		worst = max(worst, cut)
		// Where a cut-over's time goes: the proxies' acknowledgements of
		// the hold (ends at hold), the keeper's last pass and verify (at
		// catchup), the master's switch (at switch).
		t.Logf("db %d: %d writes, %d errors, %d stale, %d lost; cut-over %v (hold acked %v, caught up %v, switched %v), longest write stall %v in it, %v overall",
			d.index, st.Writes, st.Errors, st.Stale, lost, at[metadb.StepSwitch].Sub(at[metadb.StepCopy]),
			at[metadb.StepHold].Sub(at[metadb.StepCopy]), at[metadb.StepCatchup].Sub(at[metadb.StepHold]),
			at[metadb.StepSwitch].Sub(at[metadb.StepCatchup]), cut, st.MaxStall)
		if st.Errors != 0 || st.Stale != 0 || lost != 0 {
			t.Errorf("db %d: errors %d (first %v), stale %d, lost %d: want none", d.index, st.Errors, st.FirstErr, st.Stale, lost)
		}
		// The target is 100 ms (printed below for the worst db); the test
		// fails only at a stall no load of this machine explains, which
		// would mean the writes were held beyond the cut-over. Speed is for
		// benchmarks; ten dbs here share two cores with the other packages'
		// tests.
		if cut >= time.Second {
			t.Errorf("db %d: longest write stall during the cut-over %v: the writes were held beyond it", d.index, cut)
		}
		db := call(t, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, d.index), c.Demo.Token, nil).body
		if db["state"] != "active" || db["size"] != "64M" || db["slot"].(map[string]any)["pair"] != dst {
			t.Errorf("db %d after the drain: %v", d.index, db)
		}
		if v := d.rc.StrLen(ctx, "fill:0").Val(); v != 1000 {
			t.Errorf("db %d: fill:0 has %d bytes after the drain, want 1000", d.index, v)
		}
	}
	t.Logf("longest write stall during any cut-over: %v (target under 100ms)", worst)
	after := drainPairs(t, c)
	if p := after[src]; p.State != metadb.PairDrained || p.Free != p.DBs {
		t.Fatalf("pair %s after the drain: %+v, want drained with every slot free", src, p)
	}
	if p := after[dst]; p.Free != 16-n {
		t.Fatalf("pair %s after the drain: %+v, want %d free", dst, p, 16-n)
	}
	refused("/v1/admin/pairs/"+src+"/drain", 409) // already drained
}

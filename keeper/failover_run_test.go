package keeper

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// spareAndAckedWrite gives the env a spare and writes key k to its db,
// acknowledged by the replica, so that a failover has something to keep.
func spareAndAckedWrite(t *testing.T, e *env) *redistest.Server {
	t.Helper()
	ctx := t.Context()
	spare := redistest.Start(t, "databases", "4")
	if err := e.store.AddSpare(ctx, spare.Addr); err != nil {
		t.Fatal(err)
	}
	ackedWrite(t, e)
	return spare
}

// ackedWrite writes key k to the env's db on its master and waits until
// the replica acknowledged it.
func ackedWrite(t *testing.T, e *env) {
	t.Helper()
	ctx := t.Context()
	if err := e.master.ClientDB(t, e.db.SlotDB).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := e.master.Client(t).Wait(ctx, 1, time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("wait: %d, %v", n, err)
	}
}

// assignPair gives the env's pair to the keeper id, as the master would.
func assignPair(t *testing.T, e *env, id string) {
	t.Helper()
	if _, err := e.store.UpdatePair(t.Context(), nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = id; return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestKeeperFailsOverAndAttaches kills a watched pair's master: the keeper
// promotes the replica after the detection time, records the failover, and
// runs the replace job's attach step, leaving the spare in sync with the
// new master and the job at the master's record step.
func TestKeeperFailsOverAndAttaches(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	spare := spareAndAckedWrite(t, e)
	detect := 500 * time.Millisecond
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DetectTime: detect, SizingSweep: time.Hour}
	k, _ := startKeeper(t, e.store, cfg)
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error {
		p.Keeper, p.Persistence = "k1", string(pools.PersistAOFEverysec)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the pair healthy", func() bool {
		h, ok := k.Health(e.pair.ID)
		return ok && h.Master.Up && h.Replica.LinkUp
	})
	killed := time.Now()
	e.master.Kill()
	var pair *metadb.Pair
	redistest.WaitFor(t, 5*time.Second, "promotion", func() bool {
		pair, _ = e.store.Pair(ctx, e.pair.ID)
		return pair.Master == e.replica.Addr
	})
	took := time.Since(killed)
	t.Logf("promoted %v after the kill (detection %v)", took, detect)
	// Detection counts from the master's last good probe, which can come
	// up to one probe interval before the kill.
	if took < detect-cfg.ProbeInterval || took > detect+time.Second {
		t.Fatalf("promoted %v after the kill, want detection %v (less at most one probe interval) plus a few probes", took, detect)
	}
	if pair.Replica != "" || pair.State != metadb.PairDegraded {
		t.Fatalf("pair after promotion: %+v", pair)
	}
	if role := e.replica.Client(t).Do(ctx, "ROLE").Val(); role.([]any)[0] != "master" {
		t.Fatalf("replica role after promotion: %v", role)
	}
	var job *metadb.Job
	redistest.WaitFor(t, 10*time.Second, "the attach step done", func() bool {
		jobs, _ := e.store.ActiveJobs(ctx)
		for _, j := range jobs {
			if j.Kind == metadb.JobReplace {
				job = j
			}
		}
		return job != nil && job.Step == metadb.StepRecord
	})
	if job.Data[metadb.ReplaceSpare] != spare.Addr {
		t.Fatalf("job spare %q, want %s", job.Data[metadb.ReplaceSpare], spare.Addr)
	}
	if got := spare.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("spare has %q for k, want the data synced from the new master", got)
	}
	if n, err := e.replica.Client(t).Wait(ctx, 1, time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("new master's WAIT 1 after attach: %d, %v", n, err)
	}
	if c := spare.Client(t).ConfigGet(ctx, "append*").Val(); c["appendonly"] != "yes" || c["appendfsync"] != "everysec" {
		t.Fatalf("spare runs appendonly %s appendfsync %s, want the pair's aof-everysec", c["appendonly"], c["appendfsync"])
	}
}

// TestKeeperFailsOverRestartedMaster is the persistence trap: the master
// dies and comes back empty (no persistence) on the same address faster
// than the detection time. Its new run id counts as a failure: the keeper
// promotes the replica before it resyncs the empty data set.
func TestKeeperFailsOverRestartedMaster(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ackedWrite(t, e)
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DetectTime: 5 * time.Second, SizingSweep: time.Hour}
	k, _ := startKeeper(t, e.store, cfg)
	assignPair(t, e, "k1")
	redistest.WaitFor(t, 5*time.Second, "the keeper to see the pair healthy", func() bool {
		h, ok := k.Health(e.pair.ID)
		return ok && h.Master.Up && h.Replica.LinkUp
	})
	e.master.Kill()
	restarted, err := redisproc.Start(ctx, redisproc.Config{Dir: t.TempDir(), Port: e.master.Port, Args: []string{"databases", "4"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.Kill)
	redistest.WaitFor(t, 3*time.Second, "promotion", func() bool {
		p, _ := e.store.Pair(ctx, e.pair.ID)
		return p.Master == e.replica.Addr
	})
	if got := e.replica.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("promoted replica has %q for k: it resynced from the empty restarted master", got)
	}
	if d, _ := e.store.Demoted(ctx); len(d) != 1 || d[0] != e.master.Addr {
		t.Fatalf("restarted master not demoted: %v", d)
	}
}

// TestKeeperDropsDeadSpare: a spare that does not answer is given back
// (demoted, to be reclaimed when it answers) and the job returns to
// take_spare for another one.
func TestKeeperDropsDeadSpare(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", port)
	if err := e.store.AddSpare(ctx, dead); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DetectTime: 300 * time.Millisecond, SizingSweep: time.Hour}
	startKeeper(t, e.store, cfg)
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the keeper to watch the pair", func() bool {
		h, err := e.store.PairHealth(ctx, e.pair.ID)
		return err == nil && h.Master.Up && h.Replica.LinkUp
	})
	e.master.Kill()
	redistest.WaitFor(t, 10*time.Second, "the dead spare dropped", func() bool {
		jobs, _ := e.store.ActiveJobs(ctx)
		for _, j := range jobs {
			if j.Kind == metadb.JobReplace && j.Step == metadb.StepTakeSpare && j.Data[metadb.ReplaceSpare] == "" {
				return true
			}
		}
		return false
	})
	if d, _ := e.store.Demoted(ctx); !slices.Contains(d, dead) {
		t.Fatalf("dead spare not demoted: %v", d)
	}
}

// TestRestartedMasterNeverASource closes the persistence trap's window
// whatever the restart speed: with no keeper running at all when the
// master restarts empty, the replica's sync is refused by the restarted
// master (it forgot the run-time replication user), so the replica keeps
// its data; a keeper started afterwards sees the master's run id differ
// from the credential's and promotes the replica, and makes a credential
// on the new master.
func TestRestartedMasterNeverASource(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	ackedWrite(t, e)
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DetectTime: 5 * time.Second, SizingSweep: time.Hour}
	_, stop := startKeeper(t, e.store, cfg)
	assignPair(t, e, "k1")
	rc := e.replica.Client(t)
	redistest.WaitFor(t, 5*time.Second, "the replica told the credential", func() bool {
		ra, err := e.store.ReplAuth(ctx, e.pair.ID)
		if err != nil || ra.Master != e.master.Addr {
			return false
		}
		v, err := rc.ConfigGet(ctx, "masteruser").Result()
		return err == nil && v["masteruser"] == ra.User
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.master.Kill()
	restarted, err := redisproc.Start(ctx, redisproc.Config{Dir: t.TempDir(), Port: e.master.Port, Args: []string{"databases", "4"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(restarted.Kill)
	mc := redis.NewClient(&redis.Options{Addr: restarted.Addr})
	t.Cleanup(func() { mc.Close() })
	redistest.WaitFor(t, 10*time.Second, "the replica's sync refused by the restarted master", func() bool {
		s, err := mc.Info(ctx, "stats").Result()
		return err == nil && !strings.Contains(s, "acl_access_denied_auth:0\r")
	})
	if got := e.replica.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("replica has %q for k: it synced from the restarted empty master", got)
	}
	if s := rc.Info(ctx, "replication").Val(); !strings.Contains(s, "master_link_status:down") {
		t.Fatalf("replica linked to the restarted master:\n%s", s)
	}

	cfg.ID = "k2"
	startKeeper(t, e.store, cfg)
	assignPair(t, e, "k2")
	redistest.WaitFor(t, 5*time.Second, "promotion", func() bool {
		p, _ := e.store.Pair(ctx, e.pair.ID)
		return p.Master == e.replica.Addr
	})
	if got := e.replica.ClientDB(t, e.db.SlotDB).Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("promoted replica has %q for k", got)
	}
	redistest.WaitFor(t, 5*time.Second, "a credential on the new master", func() bool {
		ra, err := e.store.ReplAuth(ctx, e.pair.ID)
		return err == nil && ra.Master == e.replica.Addr
	})
}

package keeper

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
)

// waitErr polls f until it fails, for at most 10s, and returns its error
// (nil if it never failed).
func waitErr(ctx context.Context, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if err := f(); err != nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	var zero Config
	if err := zero.Validate(); err != nil {
		t.Fatalf("zero config: got %v, want the defaults", err)
	}
	d := DefaultConfig()
	d.ID = zero.ID
	if zero != d {
		t.Fatalf("zero config: got %+v, want %+v", zero, d)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"short lease", func(c *Config) { c.LeaseTTL = time.Millisecond }},
		{"fast probes", func(c *Config) { c.ProbeInterval = time.Millisecond }},
		{"negative sweep", func(c *Config) { c.SizingSweep = -time.Second }},
		{"max below pilot", func(c *Config) { c.SampleKeys, c.MaxSampleKeys = 100, 10 }},
		{"target error 1", func(c *Config) { c.TargetError = 1 }},
		{"big key factor below 1", func(c *Config) { c.BigKeyFactor = 0.5 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			if err := c.Validate(); err == nil {
				t.Fatalf("got no error, want one")
			}
		})
	}
}

type env struct {
	store   *metadb.Store
	master  *redistest.Server
	replica *redistest.Server
	pair    *metadb.Pair
	db      *metadb.DB
}

// newEnv starts a metadb and a pair, registers the pair and gives tenant
// acme an active db on it, as the master's create job would.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, "databases", "4")
}

// newEnvWith is newEnv with the pair's servers started with args (which
// must give them at least 4 databases).
func newEnvWith(t *testing.T, args ...string) *env {
	t.Helper()
	ctx := t.Context()
	meta := redistest.Start(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m, r := redistest.StartPair(t, args...)
	pair, err := store.AddPair(ctx, "64M", m.Addr, r.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	db, _, err := store.ClaimDB(ctx, "acme", pair, metadb.WriteConfirmed, 64<<20, 10, "job1")
	if err != nil {
		t.Fatal(err)
	}
	db, err = store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.State = metadb.DBActive
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &env{store: store, master: m, replica: r, pair: pair, db: db}
}

// startKeeper runs a keeper until the test ends. stop cancels it and
// returns what Run returned.
func startKeeper(t *testing.T, store Store, cfg Config) (k *Keeper, stop func() error) {
	t.Helper()
	k, err := New(cfg, store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = k.Run(ctx); close(done) }()
	stop = func() error { cancel(); <-done; return runErr }
	t.Cleanup(func() { _ = stop() })
	return k, stop
}

// TestKeeperLifecycle runs a keeper against a real metadb and pair: it
// registers, picks up the pair the master would assign it, reports the
// pair's health, records the size of a db after a proxy heartbeat names it
// as written, notices a dead replica, and deregisters when stopped.
func TestKeeperLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cfg := Config{ID: "k1", LeaseTTL: 600 * time.Millisecond, PairsPoll: 50 * time.Millisecond,
		ProbeInterval: 50 * time.Millisecond, ReportInterval: 200 * time.Millisecond,
		SizingSweep: time.Hour, MeasureGap: 50 * time.Millisecond}
	_, stop := startKeeper(t, e.store, cfg)

	redistest.WaitFor(t, 5*time.Second, "keeper registered", func() bool {
		ms, err := e.store.LiveMembers(ctx, metadb.KindKeeper)
		return err == nil && len(ms) == 1 && ms[0].ID == "k1"
	})

	// The master's assignment, emulated.
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error {
		p.Keeper = "k1"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	masterInfo, err := e.master.Client(t).Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	var h *metadb.PairHealth
	redistest.WaitFor(t, 5*time.Second, "a healthy pair report", func() bool {
		h, err = e.store.PairHealth(ctx, e.pair.ID)
		return err == nil && h.Master.Up && h.Replica.Up && h.Replica.LinkUp && h.LagBytes >= 0
	})
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"keeper", h.Keeper, "k1"},
		{"master addr", h.Master.Addr, e.master.Addr},
		{"master role", h.Master.Role, "master"},
		{"master run id", h.Master.RunID != "" && strings.Contains(masterInfo, "run_id:"+h.Master.RunID+"\r\n"), true},
		{"replica role", h.Replica.Role, "slave"},
		{"replica follows", h.Replica.MasterAddr, e.master.Addr},
		{"replica state in master's view", h.ReplicaState, "online"},
	} {
		if c.got != c.want {
			t.Errorf("report %s: got %v, want %v", c.what, c.got, c.want)
		}
	}

	// The startup sweep measures the still empty db exactly.
	redistest.WaitFor(t, 5*time.Second, "the first measurement", func() bool {
		m, err := e.store.DBSize(ctx, "acme", e.db.Index)
		return err == nil && m.Exact && m.Keys == 0
	})

	// Data arrives through the master; the keeper measures the replica.
	populate(t, e.master.Addr, e.db.SlotDB, 11, 0, 2000)
	rc := e.replica.ClientDB(t, e.db.SlotDB)
	redistest.WaitFor(t, 10*time.Second, "the replica to hold the data", func() bool {
		n, err := rc.DBSize(ctx).Result()
		return err == nil && n == 2000
	})
	ref, _, err := exactSum(ctx, rc, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// A proxy's heartbeats name the db as written. Proxies send one every
	// lease third; repeating it until the record shows covers a keeper
	// still subscribing.
	hb := &buspb.Envelope{Payload: &buspb.Envelope_Heartbeat{Heartbeat: &buspb.Heartbeat{
		Component: buspb.Component_COMPONENT_PROXY, Id: "px1",
		Activity: []*buspb.DBActivity{{Tenant: "acme", Index: uint32(e.db.Index), Writes: 2000}},
	}}}
	var m *metadb.DBSize
	redistest.WaitFor(t, 10*time.Second, "a measurement driven by the heartbeat", func() bool {
		if err := e.store.Publish(ctx, "proxy/px1", hb); err != nil {
			t.Fatal(err)
		}
		m, err = e.store.DBSize(ctx, "acme", e.db.Index)
		if err != nil || m.Reason != reasonWritten {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		return true
	})
	db, err := e.store.DB(ctx, "acme", e.db.Index)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"db used bytes", db.UsedBytes, ref},
		{"measured bytes", m.UsedBytes, ref},
		{"exact", m.Exact, true},
		{"keys", m.Keys, int64(2000)},
		{"measured on", m.Server, e.replica.Addr},
		{"slot", [2]any{m.Pair, m.SlotDB}, [2]any{e.pair.ID, e.db.SlotDB}},
		{"keeper", m.Keeper, "k1"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.what, c.got, c.want)
		}
	}

	// The replica dies: the report says so, and since when.
	e.replica.Kill()
	redistest.WaitFor(t, 5*time.Second, "the replica reported down", func() bool {
		h, err = e.store.PairHealth(ctx, e.pair.ID)
		return err == nil && !h.Replica.Up && h.Master.Up
	})
	if h.Replica.Since.IsZero() || h.Replica.Error == "" || h.LagBytes != -1 {
		t.Errorf("got replica %+v lag %d, want down since a time, with an error, lag -1", h.Replica, h.LagBytes)
	}

	if err := stop(); err != nil {
		t.Fatalf("run: got %v, want nil", err)
	}
	ms, err := e.store.Members(ctx, metadb.KindKeeper, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 0 {
		t.Fatalf("got members %v after shutdown, want none", ms)
	}
}

// TestKeeperIgnoresOtherPairs: a keeper watches and measures only the
// pairs assigned to it, even when a heartbeat names dbs elsewhere.
func TestKeeperIgnoresOtherPairs(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	m2, r2 := redistest.StartPair(t, "databases", "4")
	other, err := e.store.AddPair(ctx, "64M", m2.Addr, r2.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	otherDB, _, err := e.store.ClaimDB(ctx, "acme", other, metadb.WriteConfirmed, 64<<20, 10, "job2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdateDB(ctx, nil, "test", "acme", otherDB.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.State = metadb.DBActive
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for id, keeper := range map[string]string{e.pair.ID: "k2", other.ID: "k-other"} {
		if _, err := e.store.UpdatePair(ctx, nil, id, func(p *metadb.Pair) error {
			p.Keeper = keeper
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{ID: "k2", LeaseTTL: 600 * time.Millisecond, PairsPoll: 50 * time.Millisecond,
		ProbeInterval: 50 * time.Millisecond, SizingSweep: time.Hour, MeasureGap: 10 * time.Millisecond}
	k, _ := startKeeper(t, e.store, cfg)
	hb := &buspb.Envelope{Payload: &buspb.Envelope_Heartbeat{Heartbeat: &buspb.Heartbeat{
		Component: buspb.Component_COMPONENT_PROXY, Id: "px1",
		Activity: []*buspb.DBActivity{
			{Tenant: "acme", Index: uint32(otherDB.Index), Writes: 1},
			{Tenant: "acme", Index: uint32(e.db.Index), Writes: 1},
		},
	}}}
	redistest.WaitFor(t, 10*time.Second, "the db on this keeper's pair measured for a heartbeat", func() bool {
		if err := e.store.Publish(ctx, "proxy/px1", hb); err != nil {
			t.Fatal(err)
		}
		m, err := e.store.DBSize(ctx, "acme", e.db.Index)
		if err != nil || m.Reason != reasonWritten {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		_, ok := k.Health(e.pair.ID)
		return ok
	})
	if m, err := e.store.DBSize(ctx, "acme", otherDB.Index); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("db on another keeper's pair: got measurement %+v, %v, want %v", m, err, metadb.ErrNotFound)
	}
	if _, ok := k.Health(other.ID); ok {
		t.Fatalf("got a health report for another keeper's pair, want none")
	}
	if _, err := e.store.PairHealth(ctx, other.ID); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("another keeper's pair: got health error %v, want %v", err, metadb.ErrNotFound)
	}
}

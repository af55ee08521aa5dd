package proxy

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

func hotConfig(c *Config) {
	c.HotKeyInterval = 100 * time.Millisecond
	c.HotKeyWindow = 30 * time.Second
}

// TestHotKeysPublished: keys hit far more often than the rest, through the
// proxy, come first in the db's published report, in order, with rates of
// the right size; another tenant's db has a report of its own keys only.
func TestHotKeysPublished(t *testing.T) {
	e := newEnv(t, hotConfig)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	zpass := e.tenant("zeta")
	zdb := e.db("zeta", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	z := e.client("zeta", zpass, zdb.Index)

	// 20000 commands in pipelines of 100: hot:a on 20%, hot:b on 10%,
	// hot:c on 5%, the rest spread over 5000 keys.
	r := rand.New(rand.NewPCG(3, 4))
	start := time.Now()
	for range 200 {
		pl := c.Pipeline()
		for range 100 {
			var k string
			switch x := r.IntN(100); {
			case x < 20:
				k = "hot:a"
			case x < 30:
				k = "hot:b"
			case x < 35:
				k = "hot:c"
			default:
				k = fmt.Sprintf("cold:%d", r.IntN(5000))
			}
			pl.Get(e.ctx, k)
		}
		if _, err := pl.Exec(e.ctx); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	for range 100 {
		if err := z.Set(e.ctx, "zkey", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var got []metadb.HotKeys
	e.waitFor("hot keys of acme's db", func() bool {
		got, _ = e.store.HotKeysOf(e.ctx, "acme", db.Index, time.Minute)
		return len(got) == 1 && len(got[0].Keys) >= 3
	})
	h := got[0]
	if h.Proxy != "test-proxy" || h.SampleEvery != 16 {
		t.Fatalf("report from %q, sample_every %d", h.Proxy, h.SampleEvery)
	}
	for i, want := range []string{"hot:a", "hot:b", "hot:c"} {
		if h.Keys[i].Key != want {
			t.Fatalf("hot key %d is %q (%+v), want %q", i, h.Keys[i].Key, h.Keys[:4], want)
		}
	}
	// 4000 commands on hot:a in took; the rate is averaged over the window,
	// so it is at most about 4000/took and at least a fraction of
	// 4000/window: check only its order of magnitude.
	if rate := h.Keys[0].Rate; rate <= 0 || rate > 3*4000/took.Seconds() {
		t.Fatalf("hot:a rate %.1f/s, sent %.0f/s", rate, 4000/took.Seconds())
	}
	for _, k := range h.Keys {
		if k.Key == "zkey" {
			t.Fatal("zeta's key is in acme's report")
		}
	}
	e.waitFor("hot keys of zeta's db", func() bool {
		zs, _ := e.store.HotKeysOf(e.ctx, "zeta", zdb.Index, time.Minute)
		if len(zs) != 1 {
			return false
		}
		for _, k := range zs[0].Keys {
			if k.Key != "zkey" {
				t.Fatalf("zeta's report holds %q", k.Key)
			}
		}
		return true
	})
}

// TestHotKeysDBCap: past HotKeyDBs dbs with a summary, further dbs'
// samples are dropped (and counted), not tracked.
func TestHotKeysDBCap(t *testing.T) {
	e := newEnv(t, hotConfig, func(c *Config) { c.HotKeyDBs = 1; c.HotKeySample = 1 })
	pass := e.tenant("acme")
	a := e.db("acme", metadb.WriteAsync)
	b := e.db("acme", metadb.WriteAsync)
	ca, cb := e.client("acme", pass, a.Index), e.client("acme", pass, b.Index)
	for range 10 {
		if err := ca.Get(e.ctx, "x").Err(); err != redis.Nil {
			t.Fatal(err)
		}
		if err := cb.Get(e.ctx, "y").Err(); err != redis.Nil {
			t.Fatal(err)
		}
	}
	if n := e.p.hotDBs.Load(); n != 1 {
		t.Fatalf("%d dbs with a summary, want the cap 1", n)
	}
	e.waitFor("a's report", func() bool {
		got, _ := e.store.HotKeysOf(e.ctx, "acme", a.Index, time.Minute)
		return len(got) == 1
	})
	if got, _ := e.store.HotKeysOf(e.ctx, "acme", b.Index, time.Minute); len(got) != 0 {
		t.Fatalf("b has a report past the cap: %+v", got)
	}
}

// TestHotSamplerRate: the random gaps sample one in every commands on
// average, also for a strictly periodic pattern.
func TestHotSamplerRate(t *testing.T) {
	s := newHotSampler(7, 16)
	const n = 1 << 20
	hits := [16]int{}
	for i := 0; i < n; i++ {
		if s.tick() {
			hits[i%16]++
		}
	}
	total := 0
	for _, h := range hits {
		total += h
		// Each phase of a period-16 pattern gets its share.
		if h < n/16/16*8/10 || h > n/16/16*12/10 {
			t.Fatalf("phase hits %v: not spread evenly", hits)
		}
	}
	if total < n/16*95/100 || total > n/16*105/100 {
		t.Fatalf("%d samples of %d commands, want about 1 in 16", total, n)
	}
	off := newHotSampler(7, 0)
	for i := 0; i < 1000; i++ {
		if off.tick() {
			t.Fatal("a sampler with sampling off sampled")
		}
	}
}

// TestHotKeysDroppedDB: once a db's route is removed, its summary is
// dropped and its keys are not published again.
func TestHotKeysDroppedDB(t *testing.T) {
	e := newEnv(t, hotConfig, func(c *Config) { c.HotKeySample = 1 })
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	for range 20 {
		if err := c.Get(e.ctx, "k").Err(); err != redis.Nil {
			t.Fatal(err)
		}
	}
	e.waitFor("a report", func() bool {
		got, _ := e.store.HotKeysOf(e.ctx, "acme", db.Index, time.Minute)
		return len(got) == 1
	})
	_, err := e.store.UpdateDB(e.ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.State = metadb.DBDropping
		return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(d, e.pair), Removed: true}}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d == nil })
	e.waitFor("the summary dropped", func() bool { return e.p.hotDBs.Load() == 0 })
}

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// Key reports through the whole cluster: `granary keeper` scans the pair's
// replica for the biggest keys, `granary proxy` samples the hottest, and
// `granary api` shows both to the db's tenant only.

type keysAnswer struct {
	State   string `json:"state"`
	Scanned int64  `json:"scanned"`
	Error   string `json:"error"`
	Big     *struct {
		Complete   bool            `json:"complete"`
		Keys       int64           `json:"keys"`
		Scanned    int64           `json:"scanned"`
		ElapsedMS  int64           `json:"elapsed_ms"`
		ByBytes    []metadb.BigKey `json:"by_bytes"`
		ByElements []metadb.BigKey `json:"by_elements"`
	} `json:"big_keys"`
	Hot struct {
		Keys []struct {
			Key       string  `json:"key"`
			OpsPerSec float64 `json:"ops_per_sec"`
		} `json:"keys"`
	} `json:"hot_keys"`
}

// restCall makes one REST call and decodes a 2xx answer into v; it returns the
// status (0 while the API is not up yet).
func restCall(t *testing.T, method, url, token string, v any) int {
	t.Helper()
	rq, _ := http.NewRequestWithContext(t.Context(), method, url, nil)
	rq.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(rq)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 == 2 && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, b)
		}
	}
	return resp.StatusCode
}

// fillMaster writes n small strings, 1000 per MSET, pipelined, to db of
// the server at addr.
func fillMaster(t *testing.T, srv *redistest.Server, db, n int) {
	t.Helper()
	ctx := t.Context()
	c := srv.ClientDB(t, db)
	for i := 0; i < n; i += 100_000 {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+100_000, n); j += 1000 {
				args := make([]any, 0, 2000)
				for k := j; k < min(j+1000, n); k++ {
					args = append(args, fmt.Sprintf("small:%d", k), "v")
				}
				p.MSet(ctx, args...)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func waitReplicaKeys(t *testing.T, srv *redistest.Server, db int, n int64) {
	t.Helper()
	rc := srv.ClientDB(t, db)
	redistest.WaitFor(t, 60*time.Second, fmt.Sprintf("the replica to hold %d keys", n), func() bool {
		got, err := rc.DBSize(t.Context()).Result()
		return err == nil && got == n
	})
}

// TestKeyReportPlanted: on a db of many small keys, the planted big keys
// (by bytes and by elements) and the keys hit most often through the proxy
// come first in the report; another tenant gets 404.
func TestKeyReportPlanted(t *testing.T) {
	c := startSizedCluster(t, 0, pools.Size1G)
	ctx := t.Context()
	p := c.pair()
	master, replica := c.servers[p.Master], c.servers[p.Replica]
	fillMaster(t, master, c.db.SlotDB, 20_000)
	mc := master.ClientDB(t, c.db.SlotDB)
	_, err := mc.Pipelined(ctx, func(pl redis.Pipeliner) error {
		pl.Set(ctx, "big:str", strings.Repeat("x", 300<<10), 0)
		for i := 0; i < 20; i++ {
			vals := make([]any, 1000)
			for j := range vals {
				vals[j] = "e"
			}
			pl.RPush(ctx, "big:list", vals...)
		}
		for i := 0; i < 5000; i++ {
			pl.HSet(ctx, "big:hash", fmt.Sprint("f", i), "v")
		}
		for i := 0; i < 1000; i++ {
			pl.SAdd(ctx, "big:set", fmt.Sprint("m", i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitReplicaKeys(t, replica, c.db.SlotDB, 20_000+4+1) // and the harness's "ready"

	// Hot keys: 20000 reads through the proxy, 20% on hot:a, 10% on
	// hot:b, 5% on hot:c, the rest over the small keys.
	cl := c.client()
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		pl := cl.Pipeline()
		for range 100 {
			k := fmt.Sprintf("small:%d", r.IntN(20_000))
			switch x := r.IntN(100); {
			case x < 20:
				k = "hot:a"
			case x < 30:
				k = "hot:b"
			case x < 35:
				k = "hot:c"
			}
			pl.Get(ctx, k)
		}
		if _, err := pl.Exec(ctx); err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}

	if _, err := c.store.CreateTenant(ctx, "test", "zeta", "tok-zeta", "pw-zeta"); err != nil {
		t.Fatal(err)
	}
	_, api := startGranaryListening(t, "--addr", "api", "--metadb-url", "redis://"+c.store.Client().Options().Addr, "--admin-token", "admin-e2e")
	url := fmt.Sprintf("http://%s/v1/dbs/%d/keys/report", api, c.db.Index)
	var got keysAnswer
	redistest.WaitFor(t, 10*time.Second, "the scan requested", func() bool { return restCall(t, "POST", url, "tok", &got) == http.StatusAccepted })
	redistest.WaitFor(t, 30*time.Second, "the scan done and the hot keys published", func() bool {
		if restCall(t, "GET", url, "tok", &got) != http.StatusOK {
			t.Fatal("GET of the report failed")
		}
		if got.State == metadb.KeyReportFailed {
			t.Fatalf("scan failed: %s", got.Error)
		}
		return got.State == metadb.KeyReportDone && len(got.Hot.Keys) >= 3
	})
	b := got.Big
	if !b.Complete || b.Keys != 20_005 {
		t.Fatalf("scan: complete %v, keys %d", b.Complete, b.Keys)
	}
	if b.ByBytes[0].Key != "big:str" {
		t.Fatalf("biggest by bytes: %+v", b.ByBytes[:3])
	}
	for _, k := range b.ByBytes[:4] {
		if !strings.HasPrefix(k.Key, "big:") {
			t.Fatalf("a small key among the four biggest by bytes: %+v", b.ByBytes[:4])
		}
	}
	for i, want := range []string{"big:list", "big:hash", "big:set"} {
		if b.ByElements[i].Key != want {
			t.Fatalf("by elements: %+v, want big:list, big:hash, big:set first", b.ByElements)
		}
	}
	for i, want := range []string{"hot:a", "hot:b", "hot:c"} {
		if got.Hot.Keys[i].Key != want {
			t.Fatalf("hot keys: %+v, want hot:a, hot:b, hot:c first", got.Hot.Keys)
		}
	}
	t.Logf("scan of %d keys in %d ms; hot:a at %.1f ops/s", b.Scanned, b.ElapsedMS, got.Hot.Keys[0].OpsPerSec)
	if st := restCall(t, "GET", url, "tok-zeta", nil); st != http.StatusNotFound {
		t.Fatalf("another tenant's GET: %d, want 404", st)
	}
	if st := restCall(t, "POST", url, "tok-zeta", nil); st != http.StatusNotFound {
		t.Fatalf("another tenant's POST: %d, want 404", st)
	}
}

// TestKeyReportMillionKeys: a scan of a 1M-key db runs while a client
// writes through the proxy in confirmed mode (each write waits for the
// replica the scan runs on). The scan completes; the writes' worst
// latency during it is printed, and fails the test only far above 50 ms.
func TestKeyReportMillionKeys(t *testing.T) {
	const n = 1_000_000
	c := startSizedCluster(t, 0, pools.Size1G)
	ctx := t.Context()
	p := c.pair()
	t0 := time.Now()
	fillMaster(t, c.servers[p.Master], c.db.SlotDB, n)
	waitReplicaKeys(t, c.servers[p.Replica], c.db.SlotDB, n+1)
	t.Logf("loaded %d keys in %v", n, time.Since(t0))

	// The writer records each write's latency with its start time.
	type sample struct {
		at  time.Time
		lat time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		stop    = make(chan struct{})
		done    = make(chan struct{})
		werr    error
	)
	cl := c.client()
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s := time.Now()
			if err := cl.Set(ctx, fmt.Sprintf("w:%d", i%1000), "v", 0).Err(); err != nil {
				werr = err
				return
			}
			mu.Lock()
			samples = append(samples, sample{s, time.Since(s)})
			mu.Unlock()
		}
	}()
	defer func() { close(stop); <-done }()

	// A baseline of the same writes before the scan, to tell the scan's
	// effect from the machine's noise.
	base := time.Now()
	redistest.WaitFor(t, 30*time.Second, "5 s of baseline writes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return werr != nil || len(samples) > 0 && time.Since(samples[0].at) > 5*time.Second
	})
	if _, ok, err := c.store.RequestKeyReport(ctx, "acme", c.db.Index, 0, metadb.KeyReportStale); err != nil || !ok {
		t.Fatalf("request: %v %v", ok, err)
	}
	var r *metadb.KeyReport
	redistest.WaitFor(t, 3*time.Minute, "the scan of 1M keys", func() bool {
		var err error
		r, err = c.store.KeyReport(ctx, "acme", c.db.Index)
		if err != nil {
			t.Fatal(err)
		}
		if r.State == metadb.KeyReportFailed {
			t.Fatalf("scan failed: %s", r.Error)
		}
		return r.State == metadb.KeyReportDone
	})
	mu.Lock()
	var during, before []time.Duration
	for _, s := range samples {
		switch {
		case !s.at.Before(r.Last.Started) && s.at.Before(r.Last.Finished):
			during = append(during, s.lat)
		case !s.at.Before(base) && s.at.Before(r.Requested):
			before = append(before, s.lat)
		}
	}
	mu.Unlock()
	writes, worst := len(during), pct(during, 1)
	if werr != nil {
		t.Fatalf("a write failed: %v", werr)
	}
	l := r.Last
	t.Logf("scan of %d keys (dbsize %d) took %v, complete %v; %d confirmed writes through the proxy during it: p50 %v p99 %v max %v; "+
		"%d before it: p50 %v p99 %v max %v",
		l.Scanned, l.Keys, l.Elapsed, l.Complete, writes, pct(during, 0.5), pct(during, 0.99), worst,
		len(before), pct(before, 0.5), pct(before, 0.99), pct(before, 1))
	if !l.Complete || l.Scanned < n {
		t.Fatalf("scan incomplete: %+v", l)
	}
	if writes == 0 {
		t.Fatal("no write ran during the scan")
	}
	if worst > time.Second {
		t.Fatalf("worst write latency during the scan %v, far above 50 ms", worst)
	}
}

// pct is the q quantile of ds (q=1: the maximum); 0 for none.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

package keeper

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// plantKeys fills db of the server at addr with n small strings and a few
// big keys: a 300 KB string (the biggest by bytes) and collections of
// 20000, 5000 and 1000 elements (the biggest by element count, in that
// order).
func plantKeys(t *testing.T, addr string, db, n int) {
	t.Helper()
	ctx := t.Context()
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	defer c.Close()
	for i := 0; i < n; i += 1000 {
		args := []any{}
		for j := i; j < min(i+1000, n); j++ {
			args = append(args, fmt.Sprintf("small:%d", j), "v")
		}
		if err := c.MSet(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "big:str", strings.Repeat("x", 300<<10), 0)
		for i := 0; i < 20000; i += 1000 {
			vals := make([]any, 1000)
			for j := range vals {
				vals[j] = "e"
			}
			p.RPush(ctx, "big:list", vals...)
		}
		for i := 0; i < 5000; i++ {
			p.HSet(ctx, "big:hash", fmt.Sprint("f", i), "v")
		}
		for i := 0; i < 1000; i++ {
			p.ZAdd(ctx, "big:zset", redis.Z{Score: float64(i), Member: fmt.Sprint("m", i)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyReportOnReplica: a requested report is claimed by the keeper that
// watches the pair, scanned on the replica, and names the planted keys
// first; the master never sees the scan.
func TestKeyReportOnReplica(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	plantKeys(t, e.master.Addr, e.db.SlotDB, 5000)
	rc := e.replica.ClientDB(t, e.db.SlotDB)
	redistest.WaitFor(t, 10*time.Second, "the replica to hold the data", func() bool {
		n, err := rc.DBSize(ctx).Result()
		return err == nil && n == 5004
	})
	mc := e.master.Client(t)
	scansBefore := commandCalls(t, mc, "scan")

	cfg := Config{ID: "k1", LeaseTTL: 600 * time.Millisecond, PairsPoll: 50 * time.Millisecond,
		ProbeInterval: 50 * time.Millisecond, SizingSweep: time.Hour, KeyReportPoll: 50 * time.Millisecond, KeyReportTop: 5}
	startKeeper(t, e.store, cfg)
	if _, ok, err := e.store.RequestKeyReport(ctx, "acme", e.db.Index, time.Minute, metadb.KeyReportStale); err != nil || !ok {
		t.Fatalf("request: %v %v", ok, err)
	}
	var r *metadb.KeyReport
	redistest.WaitFor(t, 20*time.Second, "the report", func() bool {
		var err error
		r, err = e.store.KeyReport(ctx, "acme", e.db.Index)
		return err == nil && (r.State == metadb.KeyReportDone || r.State == metadb.KeyReportFailed)
	})
	if r.State != metadb.KeyReportDone {
		t.Fatalf("report %s: %s", r.State, r.Error)
	}
	l := r.Last
	if !l.Complete || l.Server != e.replica.Addr || l.Keeper != "k1" || l.Keys != 5004 || l.Scanned < 5004 {
		t.Fatalf("report: complete %v, server %s (replica %s), keeper %s, keys %d, scanned %d", l.Complete, l.Server, e.replica.Addr, l.Keeper, l.Keys, l.Scanned)
	}
	if len(l.ByBytes) != 5 || len(l.ByElements) != 3 {
		t.Fatalf("lists of %d and %d keys", len(l.ByBytes), len(l.ByElements))
	}
	if k := l.ByBytes[0]; k.Key != "big:str" || k.Type != "string" || k.Elements != 300<<10 || k.Bytes < 300<<10 {
		t.Fatalf("biggest by bytes: %+v", k)
	}
	for i, want := range []struct {
		key, typ string
		n        int64
	}{{"big:list", "list", 20000}, {"big:hash", "hash", 5000}, {"big:zset", "zset", 1000}} {
		if k := l.ByElements[i]; k.Key != want.key || k.Type != want.typ || k.Elements != want.n {
			t.Fatalf("by elements %d: %+v, want %s %s of %d", i, k, want.key, want.typ, want.n)
		}
	}
	for _, k := range l.ByBytes[:4] {
		if !strings.HasPrefix(k.Key, "big:") {
			t.Fatalf("a small key among the four biggest: %+v", l.ByBytes)
		}
	}
	if n := commandCalls(t, mc, "scan"); n != scansBefore {
		t.Fatalf("the master got %d SCANs", n-scansBefore)
	}
}

// commandCalls is how many times the server ran cmd (INFO commandstats).
func commandCalls(t *testing.T, c *redis.Client, cmd string) int64 {
	t.Helper()
	s, err := c.Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, line := range strings.Split(s, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			fmt.Sscanf(rest, "%d", &n)
		}
	}
	return n
}

// TestKeyScanBounds: the key cap stops a scan, partial; a progress error
// ends it; a key deleted mid-scan is skipped.
func TestKeyScanBounds(t *testing.T) {
	srv := redistest.Start(t)
	plantKeys(t, srv.Addr, 1, 3000)
	c := srv.Client(t)
	ctx := t.Context()
	conn := c.Conn()
	defer conn.Close()
	noProgress := func(int64) error { return nil }

	s := keyScan{batch: 100, maxKeys: 1000, maxTime: time.Minute, top: 3}
	r, err := s.run(ctx, conn, 1, time.Hour, noProgress)
	if err != nil {
		t.Fatal(err)
	}
	if r.complete || r.partial == "" || r.scanned < 1000 || r.scanned > 1200 || r.keys != 3004 {
		t.Fatalf("capped scan: complete %v partial %q scanned %d keys %d", r.complete, r.partial, r.scanned, r.keys)
	}

	s.maxKeys = 1 << 40
	stop := errors.New("stop")
	calls := 0
	_, err = s.run(ctx, conn, 1, 0, func(int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("progress error: %v after %d calls", err, calls)
	}

	r, err = s.run(ctx, conn, 1, time.Hour, noProgress)
	if err != nil || !r.complete || len(r.byBytes) != 3 || r.byBytes[0].Key != "big:str" {
		t.Fatalf("full scan: %+v %v", r, err)
	}
}

func TestBigTop(t *testing.T) {
	bt := newBigTop(3)
	for i, v := range []int64{5, 1, 9, 7, 9, 3, 8} {
		bt.offer(metadb.BigKey{Key: fmt.Sprint("k", i)}, v)
	}
	bt.offer(metadb.BigKey{Key: "k2"}, 9) // a duplicate from SCAN
	got := bt.sorted()
	if len(got) != 3 || got[0].Key != "k2" && got[0].Key != "k4" || got[2].Key != "k6" {
		t.Fatalf("top 3: %+v", got)
	}
	seen := map[string]bool{}
	for _, k := range got {
		if seen[k.Key] {
			t.Fatalf("key %s twice", k.Key)
		}
		seen[k.Key] = true
	}
}

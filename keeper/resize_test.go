package keeper

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestCopySessionKeepsUpWithWrites copies a db while a writer sets,
// overwrites and deletes keys in it: after the writer stops, a barrier and
// a last drain make the target equal to the source (verify passes on every
// key), the target's replica has it all, and the notification setting is
// restored when the session closes.
func TestCopySessionKeepsUpWithWrites(t *testing.T) {
	ctx := t.Context()
	sm, _ := redistest.StartPair(t, "databases", "4")
	dm, _ := redistest.StartPair(t, "databases", "4")
	src := sm.ClientDB(t, 1)
	for i := 0; i < 5000; i += 500 {
		p := src.Pipeline()
		for j := i; j < i+500; j++ {
			p.Set(ctx, "k"+strconv.Itoa(j), j, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dm.ClientDB(t, 2).Set(ctx, "stale", "from an earlier attempt", 0)

	s, err := openCopy(ctx, sm.Addr, "", 1, dm.Addr, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			written.Store(int64(n))
			select {
			case <-stop:
				return
			default:
			}
			k := "k" + strconv.Itoa(n%6000)
			if n%7 == 0 {
				src.Del(ctx, k)
			} else {
				src.Set(ctx, k, "v"+strconv.Itoa(n), 0)
			}
		}
	}()
	if err := s.fullCopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	// Writes go on after the copy: a few hundred more before they stop.
	sofar := written.Load()
	redistest.WaitFor(t, 10*time.Second, "writes after the copy", func() bool { return written.Load() >= sofar+300 })
	close(stop)
	wg.Wait()
	if err := s.barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.verify(ctx, 10000); err != nil {
		t.Fatalf("verify every key: %v", err)
	}
	if err := s.waitReplica(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s.close()
	if v := src.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]; v != "" {
		t.Fatalf("notify-keyspace-events after the session: %q, want it restored to empty", v)
	}
}

// TestCopySessionBigKeysFromReplica copies a db holding big keys of every
// paged type (a 3 MB string, a 20,000-field hash, sets, sorted sets and
// lists over the bounds) and small keys with expiries, reading from the
// source pair's replica, while a writer changes the big hash and some small
// keys: after the barrier and a last drain every key's value and expiry on
// the target equal the source's, no temporary key is left, and the source
// master was never sent a data-moving command (no SCAN, DUMP, MIGRATE,
// HSCAN…: its commandstats show only notifications, INFO and PINGs).
func TestCopySessionBigKeysFromReplica(t *testing.T) {
	ctx := t.Context()
	sm, sr := redistest.StartPair(t, "databases", "4")
	dm, _ := redistest.StartPair(t, "databases", "4")
	src := sm.ClientDB(t, 1)
	fill := func(fn func(p redis.Pipeliner)) {
		t.Helper()
		p := src.Pipeline()
		fn(p)
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fill(func(p redis.Pipeliner) {
		p.Set(ctx, "bigstr", strings.Repeat("0123456789abcdef", 3<<16), 0) // 3 MB
		p.PExpireAt(ctx, "bigstr", time.Now().Add(time.Hour))
		for i := 0; i < 2000; i++ {
			p.Set(ctx, "s"+strconv.Itoa(i), i, 0)
			if i%3 == 0 {
				p.Expire(ctx, "s"+strconv.Itoa(i), time.Hour)
			}
		}
	})
	for i := 0; i < 20000; i += 1000 {
		fill(func(p redis.Pipeliner) {
			for j := i; j < i+1000; j++ {
				f := strconv.Itoa(j)
				p.HSet(ctx, "bighash", "f"+f, "v"+f)
				p.SAdd(ctx, "bigset", "m"+f)
				p.ZAdd(ctx, "bigzset", redis.Z{Score: float64(j) / 7, Member: "m" + f})
				p.RPush(ctx, "biglist", "e"+f)
			}
		})
	}
	redistest.WaitFor(t, 10*time.Second, "the replica to have the data", func() bool {
		return sr.ClientDB(t, 1).DBSize(ctx).Val() == src.DBSize(ctx).Val()
	})
	if err := src.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	s, err := openCopy(ctx, sm.Addr, sr.Addr, 1, dm.Addr, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if !s.fromReplica {
		t.Fatal("the session reads from the master, want the replica")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			written.Store(int64(n))
			select {
			case <-stop:
				return
			default:
			}
			f := strconv.Itoa(n % 25000)
			switch n % 4 {
			case 0:
				src.HSet(ctx, "bighash", "f"+f, "w"+strconv.Itoa(n))
			case 1:
				src.HDel(ctx, "bighash", "f"+f)
			case 2:
				src.Set(ctx, "s"+strconv.Itoa(n%2500), n, 0)
			default:
				src.LPush(ctx, "biglist", n)
			}
		}
	}()
	if err := s.fullCopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	sofar := written.Load()
	redistest.WaitFor(t, 10*time.Second, "writes after the copy", func() bool { return written.Load() >= sofar+300 })
	close(stop)
	wg.Wait()
	if err := s.barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.verify(ctx, 10000); err != nil {
		t.Fatalf("verify every key: %v", err)
	}
	// The test reads the source master itself from here on.
	stats := src.Info(ctx, "commandstats").Val()
	for _, l := range strings.Split(stats, "\n") {
		name, _, _ := strings.Cut(strings.TrimPrefix(l, "cmdstat_"), ":")
		switch {
		case !strings.HasPrefix(l, "cmdstat_"):
		case slices.Contains([]string{"scan", "dump", "migrate", "hscan", "sscan", "zscan", "lrange", "getrange",
			"memory|usage", "exists", "type"}, name):
			t.Fatalf("the source master ran %s", strings.TrimSpace(l))
		}
	}
	// verify compares big keys by length: compare them whole here.
	dst := dm.ClientDB(t, 2)
	same := func(what string, a, b any) {
		t.Helper()
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s differs on the target", what)
		}
	}
	same("bigstr", src.Get(ctx, "bigstr").Val(), dst.Get(ctx, "bigstr").Val())
	same("bighash", sortedMap(src.HGetAll(ctx, "bighash").Val()), sortedMap(dst.HGetAll(ctx, "bighash").Val()))
	same("bigset", sorted(src.SMembers(ctx, "bigset").Val()), sorted(dst.SMembers(ctx, "bigset").Val()))
	same("bigzset", src.ZRangeWithScores(ctx, "bigzset", 0, -1).Val(), dst.ZRangeWithScores(ctx, "bigzset", 0, -1).Val())
	same("biglist", src.LRange(ctx, "biglist", 0, -1).Val(), dst.LRange(ctx, "biglist", 0, -1).Val())
	keys, err := scanAll(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		a, b := src.PExpireTime(ctx, k).Val(), dst.PExpireTime(ctx, k).Val()
		if a != b {
			t.Fatalf("key %s expires at %v on the source, %v on the target", k, a, b)
		}
	}
	if n := dst.DBSize(ctx).Val(); n != int64(len(keys)) {
		t.Fatalf("target has %d keys, source %d: a temporary key was left", n, len(keys))
	}
}

func sorted(v []string) []string { slices.Sort(v); return v }

func sortedMap(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return sorted(out)
}

// TestCopySessionReadsMasterWithoutReplica: a replica address that is not
// a replica of the source master (here a lone server) is not read from;
// the copy reads the master and is exact.
func TestCopySessionReadsMasterWithoutReplica(t *testing.T) {
	ctx := t.Context()
	sm, _ := redistest.StartPair(t, "databases", "4")
	lone := redistest.Start(t, "databases", "4")
	dm, _ := redistest.StartPair(t, "databases", "4")
	src := sm.ClientDB(t, 1)
	for i := 0; i < 100; i++ {
		src.Set(ctx, "k"+strconv.Itoa(i), i, 0)
	}
	s, err := openCopy(ctx, sm.Addr, lone.Addr, 1, dm.Addr, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if s.fromReplica {
		t.Fatal("the session reads from a server that does not replicate the source")
	}
	if err := s.fullCopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.verify(ctx, 1000); err != nil {
		t.Fatal(err)
	}
}

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/pools"
)

// TestQuotaBanAndRelease fills a 32M db through the proxy past its size
// (DESIGN.md invariant 7): SET gets -OOM within 2 s of the db crossing its
// quota, GET and DEL keep working, and writes come back within 2 s of the
// db getting back under, on the same connection. The db's true size is
// tracked by the test as the sum of MEMORY USAGE … SAMPLES 0 of its keys,
// read on the pair's master: the figure the keeper estimates.
func TestQuotaBanAndRelease(t *testing.T) {
	c := startSizedCluster(t, 0, pools.Size32M)
	ctx := t.Context()
	cl := c.client()
	direct := c.servers[c.pair().Master].ClientDB(t, c.db.SlotDB)
	quota := pools.Size32M.Bytes()
	value := strings.Repeat("v", 100<<10)

	used := int64(0)
	sizes := map[string]int64{}
	measure := func(key string) {
		n, err := direct.MemoryUsage(ctx, key, 0).Result()
		if err != nil {
			t.Fatal(err)
		}
		used += n - sizes[key]
		sizes[key] = n
	}
	measure("ready")

	// Fill, one 100 KB value every 10 ms, until the proxy refuses.
	var crossed, banned time.Time
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i := 0; banned.IsZero(); i++ {
		<-tick.C
		key := fmt.Sprintf("k%05d", i)
		err := cl.Set(ctx, key, value, 0).Err()
		switch {
		case err == nil:
			measure(key)
			if crossed.IsZero() && used > quota {
				crossed = time.Now()
			}
		case strings.HasPrefix(err.Error(), "OOM"):
			banned = time.Now()
		default:
			t.Fatalf("SET %s: %v", key, err)
		}
		if i > 1000 {
			t.Fatal("no -OOM after 100 MB of writes to a 32M db")
		}
		if !crossed.IsZero() && time.Since(crossed) > 5*time.Second {
			t.Fatalf("no -OOM 5 s after crossing the quota (used %d of %d)", used, quota)
		}
	}
	if crossed.IsZero() {
		t.Fatalf("-OOM before the db crossed its quota (used %d of %d)", used, quota)
	}
	lag := banned.Sub(crossed)
	t.Logf("-OOM %v after crossing the quota (db at %d bytes by then, quota %d)", lag, used, quota)
	if lag > 2*time.Second {
		t.Fatalf("-OOM came %v after crossing the quota, want within 2s", lag)
	}

	// Reads and deletes still work under the ban.
	if got, err := cl.Get(ctx, "k00000").Result(); err != nil || got != value {
		t.Fatalf("GET under a ban: %d bytes, %v", len(got), err)
	}
	var under time.Time
	for i := 0; used > quota*9/10; i++ {
		key := fmt.Sprintf("k%05d", i)
		if err := cl.Del(ctx, key).Err(); err != nil {
			t.Fatalf("DEL under a ban: %v", err)
		}
		used -= sizes[key]
		delete(sizes, key)
	}
	under = time.Now()

	// Writes come back by themselves on the same connection.
	for {
		<-tick.C
		err := cl.Set(ctx, "after", "x", 0).Err()
		if err == nil {
			break
		}
		if !strings.HasPrefix(err.Error(), "OOM") {
			t.Fatalf("SET after getting under: %v", err)
		}
		if time.Since(under) > 5*time.Second {
			t.Fatal("writes still refused 5 s after the db got back under its quota")
		}
	}
	back := time.Since(under)
	t.Logf("back under at %d bytes; writes accepted %v later", used, back)
	if back > 2*time.Second {
		t.Fatalf("writes came back %v after getting under the quota, want within 2s", back)
	}
}

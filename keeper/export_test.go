package keeper

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// fillEveryType writes every data type, in small and large encodings,
// with TTLs, a key bigger than a DUMP pipeline's bound and n plain keys.
func fillEveryType(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	pl := c.Pipeline()
	redistest.QueueEveryType(ctx, pl, 1000)
	pl.Set(ctx, "str:big", strings.Repeat("b", 3<<20/2), 0) // over copyBatchBytes
	for i := range n {
		ttl := time.Duration(0)
		if i%5 == 0 {
			ttl = time.Duration(1+i%7) * time.Hour
		}
		pl.Set(ctx, "k:"+strconv.Itoa(i), i, ttl)
	}
	if _, err := pl.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// keyState is each key's DEBUG DIGEST-VALUE and PEXPIRETIME.
func keyState(t *testing.T, c *redis.Client) map[string][2]string {
	t.Helper()
	ctx := t.Context()
	out := map[string][2]string{}
	iter := c.Scan(ctx, 0, "", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		d, err := c.Do(ctx, "DEBUG", "DIGEST-VALUE", k).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		out[k] = [2]string{d[0], strconv.FormatInt(c.PExpireTime(ctx, k).Val().Milliseconds(), 10)}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameKeys stops the test unless got holds want's keys, and only them,
// with the same values and expiries (±1 s), naming the first few that
// differ.
func sameKeys(t *testing.T, want, got map[string][2]string) {
	t.Helper()
	bad := 0
	if len(got) != len(want) {
		bad++
		t.Errorf("%d keys loaded, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		wt, _ := strconv.ParseInt(w[1], 10, 64)
		gt, _ := strconv.ParseInt(g[1], 10, 64)
		if !ok || g[0] != w[0] || (wt > 0) != (gt > 0) || max(wt-gt, gt-wt) > 1000 {
			if bad++; bad <= 5 {
				t.Errorf("key %q: loaded %v (present %v), want %v", k, g, ok, w)
			}
		}
	}
	if bad > 0 {
		t.FailNow()
	}
}

// startExport ends newEnv's create job, as the master would have, and
// records an export of the env's db.
func startExport(t *testing.T, e *env) *metadb.Job {
	t.Helper()
	ctx := t.Context()
	if _, err := e.store.UpdateJob(ctx, nil, "job1", func(j *metadb.Job) error {
		j.State, j.Step = metadb.JobDone, metadb.StepDone
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	job, err := e.store.StartExport(ctx, "acme", e.db.Index, "exp-1", 16)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

// loadRDB starts a plain redis-server on the file and returns a client.
func loadRDB(t *testing.T, file []byte) *redis.Client {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dump.rdb"), file, 0o600); err != nil {
		t.Fatal(err)
	}
	return redistest.Start(t, "enable-debug-command", "yes", "dir", dir, "dbfilename", "dump.rdb").Client(t)
}

// TestExportDump runs an export job through a keeper against a real pair:
// the file it stores holds the db's slot only, every type byte for byte,
// TTLs kept, passes Check, loads in a plain redis-server, and its size,
// key count and SHA-256 are recorded in the job.
func TestExportDump(t *testing.T) {
	e := newEnvWith(t, "databases", "4", "enable-debug-command", "yes")
	ctx := t.Context()
	src := e.master.ClientDB(t, e.db.SlotDB)
	fillEveryType(t, src, 5000)
	src.Set(ctx, "short", "gone soon", 10*time.Millisecond)
	other := e.master.ClientDB(t, (e.db.SlotDB+1)%4)
	other.Set(ctx, "another-db", "must not be exported", 0)
	redistest.WaitFor(t, 5*time.Second, "the short key to expire", func() bool { return src.Exists(ctx, "short").Val() == 0 })
	want := keyState(t, src)

	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	job := startExport(t, e)
	cfg := Config{ID: "k1", LeaseTTL: 600 * time.Millisecond, PairsPoll: 20 * time.Millisecond,
		JobPoll: 10 * time.Millisecond, SizingSweep: time.Hour, Store: objs}
	startKeeper(t, e.store, cfg)
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	var j *metadb.Job
	redistest.WaitFor(t, 30*time.Second, "the export done", func() bool {
		j, err = e.store.Job(ctx, job.ID)
		return err == nil && j.State == metadb.JobDone
	})
	r, info, err := objs.Open(ctx, j.Data[metadb.ExportObject])
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(file)
	for _, c := range []struct {
		what      string
		got, want string
	}{
		{"sha256", j.Data[metadb.ExportSHA256], hex.EncodeToString(sum[:])},
		{"store's sha256", info.SHA256, hex.EncodeToString(sum[:])},
		{"size", j.Data[metadb.ExportSize], strconv.Itoa(len(file))},
		{"bytes", j.Data[metadb.ResizeBytesCopied], strconv.Itoa(len(file))},
		{"keys", j.Data[metadb.ResizeKeysCopied], strconv.Itoa(len(want))},
		{"step", string(j.Step), string(metadb.StepDone)},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if j.Progress != 1 || j.Log[len(j.Log)-1].By != "keeper/k1" {
		t.Errorf("job progress %v, log %+v", j.Progress, j.Log)
	}
	if _, err := rdbfile.Check(strings.NewReader(string(file))); err != nil {
		t.Fatalf("Check: %v", err)
	}
	sameKeys(t, want, keyState(t, loadRDB(t, file)))
}

// TestExportDumpRefusesWithoutStore: a keeper with no object store records
// why on the job and leaves it running, to be retried.
func TestExportDumpRefusesWithoutStore(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	job := startExport(t, e)
	k, err := New(Config{ID: "k1"}, e.store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.exportDump(ctx, job); err == nil || !strings.Contains(err.Error(), "--store") {
		t.Fatalf("dump without a store: %v", err)
	}
}

// TestExportDeletedDuringDump: a dump whose export is deleted stops, and
// no file is left in the store.
func TestExportDeletedDuringDump(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	fillEveryType(t, e.master.ClientDB(t, e.db.SlotDB), 20000)
	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	job := startExport(t, e)
	k, err := New(Config{ID: "k1", Store: objs}, e.store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	k.leaseUntil.Store(time.Now().Add(time.Hour).UnixNano())
	if _, err := e.store.DeleteExport(ctx, "acme", job.ID); err != nil {
		t.Fatal(err)
	}
	// The keeper's copy of the job still says running: the first progress
	// report (or the final record) finds it deleted.
	if _, err := k.exportDump(ctx, job); err != errWaitStep {
		t.Fatalf("dump of a deleted export: %v, want errWaitStep", err)
	}
	if _, err := objs.Stat(ctx, job.Data[metadb.ExportObject]); err != objstore.ErrNotFound {
		t.Fatalf("object after the deleted dump: %v, want ErrNotFound", err)
	}
}

// TestDumperFresh: a key SCAN returns again (a rehash during the walk) is
// written once, since redis-server refuses a file with a key twice.
func TestDumperFresh(t *testing.T) {
	d := &dumper{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, seen: map[[2]uint64]struct{}{}}
	if got := d.fresh([]string{"a", "b", "a"}); fmt.Sprint(got) != "[a b]" {
		t.Fatalf("first batch: %v", got)
	}
	if got := d.fresh([]string{"c", "b", ""}); fmt.Sprint(got) != "[c ]" {
		t.Fatalf("second batch: %q", got)
	}
}

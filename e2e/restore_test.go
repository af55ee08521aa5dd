package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// Restore of a tenant db from an RDB file (issue 12, item 2) on separate
// `granary master` ×2, `granary keeper`, `granary proxy` and `granary api`
// processes sharing an object store directory.

type restoreCluster struct {
	t     *testing.T
	store *metadb.Store
	rig   *crashRig
	pair  *metadb.Pair
	pm    *redistest.Server
	db    *metadb.DB
	api   string
	proxy string
	objs  string // the object store's directory
}

// startRestoreCluster starts the processes, a 64M pair of 4 dbs (with
// DEBUG, to compare digests) and gives tenant acme db 0 on it.
func startRestoreCluster(t *testing.T) *restoreCluster {
	t.Helper()
	meta, store := metaStore(t)
	ctx := t.Context()
	c := &restoreCluster{t: t, store: store}
	m, r := redistest.StartPair(t, "maxmemory", "1gb", "databases", "4", "enable-debug-command", "yes")
	p, err := store.AddPair(ctx, "64M", m.Addr, r.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	c.pair, c.pm = p, m
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	c.objs = t.TempDir()
	objs := "dir:" + c.objs
	c.rig = newCrashRigWith(t, meta.Addr, store, "--store", objs)
	url := "redis://" + meta.Addr
	_, out := startGranaryOutputListening(t, "--addr", "api", "--metadb-url", url, "--admin-token", "adm", "--store", objs)
	c.api = "http://" + out.addr
	_, c.proxy = startGranaryListening(t, "--addr", "proxy", "--metadb-url", url, "--id", "px")
	_, job, err := store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "db created", func() bool { j, _ := store.Job(ctx, job.ID); return j != nil && j.State == metadb.JobDone })
	c.db, _ = store.DB(ctx, "acme", job.Index)
	cl := c.client()
	redistest.WaitFor(t, 20*time.Second, "the proxy to serve the db", func() bool { return cl.Set(ctx, "ready", "1", 0).Err() == nil })
	return c
}

// client connects to the db through the proxy.
func (c *restoreCluster) client() *redis.Client {
	cl := redis.NewClient(&redis.Options{Addr: c.proxy, Username: "acme", Password: "pw", DB: c.db.Index,
		MaxRetries: -1, PoolSize: 4, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: time.Second})
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// uploads lists the uploaded files left in the store.
func (c *restoreCluster) uploads() []string {
	left, _ := filepath.Glob(filepath.Join(c.objs, "uploads", "*", "*.rdb"))
	return left
}

// slot is the db's slot on the pair's master.
func (c *restoreCluster) slot() *redis.Client { return c.pm.ClientDB(c.t, c.db.SlotDB) }

// upload POSTs file as the db's restore and returns the answer.
func (c *restoreCluster) upload(file []byte) apiReply {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("%s/v1/dbs/%d/restore", c.api, c.db.Index), bytes.NewReader(file))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := apiReply{status: resp.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// waitDone waits for job id to end and fails unless it is done.
func (c *restoreCluster) waitDone(id string, within time.Duration) *metadb.Job {
	c.t.Helper()
	redistest.WaitFor(c.t, within, "restore "+id+" to end", func() bool { return job(c.t, c.store, id).State != metadb.JobRunning })
	j := job(c.t, c.store, id)
	if j.State != metadb.JobDone {
		c.t.Fatalf("restore %s: %s at %s (%s)", id, j.State, j.Step, j.Error)
	}
	return j
}

// throughput logs a finished restore's load figures.
func throughput(t *testing.T, j *metadb.Job) {
	ms, _ := strconv.ParseFloat(j.Data[metadb.ResizeCopyMillis], 64)
	keys, _ := strconv.ParseFloat(j.Data[metadb.ResizeKeysCopied], 64)
	bytes, _ := strconv.ParseFloat(j.Data[metadb.ResizeBytesCopied], 64)
	if ms <= 0 {
		return
	}
	t.Logf("restore %s: %.0f keys, %.1f MB (in memory) loaded in %.2fs: %.0f keys/s, %.1f MB/s; whole job %s",
		j.ID, keys, bytes/(1<<20), ms/1000, keys/(ms/1000), bytes/(1<<20)/(ms/1000), jobTook(j))
}

// jobTook is how long j took from its request to its last step.
func jobTook(j *metadb.Job) time.Duration {
	a, err1 := time.Parse(time.RFC3339Nano, j.Created)
	b, err2 := time.Parse(time.RFC3339Nano, j.Log[len(j.Log)-1].At)
	if err1 != nil || err2 != nil {
		return 0
	}
	return b.Sub(a).Round(time.Millisecond)
}

// typesSource is a plain redis-server with every data type (fillTypes)
// and a key in db 1, and its SAVEd file.
func typesSource(t *testing.T, n int) (*redistest.Server, []byte) {
	t.Helper()
	src := redistest.Start(t, "enable-debug-command", "yes")
	c := src.Client(t)
	ctx := t.Context()
	fillTypes(t, c, n)
	src.ClientDB(t, 1).Set(ctx, "other-db", "left out", 0)
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(src.Dir, fmt.Sprintf("dump-%d.rdb", src.Port)))
	if err != nil {
		t.Fatal(err)
	}
	return src, file
}

// noiseValue is key i's value: 200 bytes that do not compress, so files
// are about as big as the data.
func noiseValue(i int) string {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	b := make([]byte, 200)
	for j := range b {
		b[j] = byte(r.Uint32())
	}
	return string(b)
}

// fillTypes writes every data type (an intset, a stream with a consumer
// group), TTLs and n plain keys of 200 random bytes, a quarter with a TTL.
func fillTypes(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	_, err := c.Pipelined(ctx, func(pl redis.Pipeliner) error {
		redistest.QueueEveryType(ctx, pl, 300)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i += 1000 {
		_, err := c.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for k := i; k < min(i+1000, n); k++ {
				if k%4 == 0 {
					pl.Set(ctx, "k:"+strconv.Itoa(k), noiseValue(k), time.Duration(600+k%600)*time.Second)
				} else {
					pl.Set(ctx, "k:"+strconv.Itoa(k), noiseValue(k), 0)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// keyDigest is a key's DEBUG DIGEST-VALUE and absolute expiry (ms, or
// a negative PEXPIRETIME reply for none).
type keyDigest struct {
	digest string
	expire int64
}

// digests is each key's keyDigest.
func digests(t *testing.T, c *redis.Client) map[string]keyDigest {
	t.Helper()
	ctx := t.Context()
	out := map[string]keyDigest{}
	iter := c.Scan(ctx, 0, "", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(keys); i += 1000 {
		part := keys[i:min(i+1000, len(keys))]
		dig := make([]*redis.Cmd, len(part))
		exp := make([]*redis.DurationCmd, len(part))
		if _, err := c.Pipelined(ctx, func(pl redis.Pipeliner) error {
			for j, k := range part {
				dig[j] = pl.Do(ctx, "DEBUG", "DIGEST-VALUE", k)
				exp[j] = pl.PExpireTime(ctx, k)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for j, k := range part {
			d, err := dig[j].StringSlice()
			if err != nil {
				t.Fatal(err)
			}
			out[k] = keyDigest{d[0], exp[j].Val().Milliseconds()}
		}
	}
	return out
}

// sameDigests fails unless got holds exactly want's keys and values, with
// expiries within a second.
func sameDigests(t *testing.T, want, got map[string]keyDigest) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d keys, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok || g.digest != w.digest {
			t.Fatalf("key %q differs (present %v)", k, ok)
		}
		if (w.expire > 0) != (g.expire > 0) || w.expire-g.expire > 1000 || g.expire-w.expire > 1000 {
			t.Fatalf("key %q expires at %d, want %d (±1s)", k, g.expire, w.expire)
		}
	}
}

// garbageRDB is a file with a right checksum and a list Redis will not
// load: only the keeper's scratch server catches it.
func garbageRDB() []byte {
	b := []byte("REDIS0010\xfe\x00\x0e\x03bad\x01\x05zzzzz\xff")
	return binary.LittleEndian.AppendUint64(b, rdbfile.Checksum(b))
}

// TestRestoreUpload restores a plain redis-server's SAVEd file (every type,
// TTLs, a key in db 1 left out) into a db through the real cluster, and
// reads the data through the proxy; before that, a file whose data is
// bigger than the db's quota (422) and one that does not load (400) are
// refused and leave the db as it was, writable.
func TestRestoreUpload(t *testing.T) {
	c := startRestoreCluster(t)
	ctx := t.Context()
	src, file := typesSource(t, 5000)
	cl := c.client()
	if err := cl.Set(ctx, "old", "before the restore", 0).Err(); err != nil {
		t.Fatal(err)
	}
	setQuota := func(q int64) {
		if _, err := c.store.UpdateDB(ctx, nil, "test", "acme", c.db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
			d.QuotaBytes = q
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Too big: the quota, as the keeper reads it, below the file's data.
	setQuota(256 << 10)
	rep := c.upload(file)
	if rep.status != http.StatusUnprocessableEntity || !strings.Contains(fmt.Sprint(rep.body["error"]), "resize first") {
		t.Fatalf("too big: %d %s", rep.status, rep.raw)
	}
	t.Logf("422: %s", rep.body["error"])
	setQuota(64 << 20)
	rep = c.upload(garbageRDB())
	if rep.status != http.StatusBadRequest || !strings.Contains(fmt.Sprint(rep.body["error"]), "integrity check failed") {
		t.Fatalf("garbage: %d %s", rep.status, rep.raw)
	}
	t.Logf("400: %s", rep.body["error"])
	if v := cl.Get(ctx, "old").Val(); v != "before the restore" || cl.DBSize(ctx).Val() != 2 {
		t.Fatalf("the refusals changed the db: old=%q, %d keys", v, cl.DBSize(ctx).Val())
	}
	if err := cl.Set(ctx, "old", "still writable", 0).Err(); err != nil {
		t.Fatalf("write after the refusals: %v", err)
	}
	if active, _ := c.store.ActiveJobs(ctx); len(active) != 0 {
		t.Fatalf("%d jobs left running after the refusals", len(active))
	}

	rep = c.upload(file)
	if rep.status != http.StatusAccepted {
		t.Fatalf("restore: %d %s", rep.status, rep.raw)
	}
	id := fmt.Sprint(rep.body["job"])
	j := c.waitDone(id, 60*time.Second)
	assertStepsOnce(t, j)
	throughput(t, j)
	if j.Data[metadb.RestoreIgnoredKeys] != "1" {
		t.Fatalf("ignored keys %q, want 1 (db 1's)", j.Data[metadb.RestoreIgnoredKeys])
	}
	sameDigests(t, digests(t, src.Client(t)), digests(t, c.slot()))

	// Through the proxy: the file's data, and the db takes writes again.
	want := src.Client(t)
	if n, w := cl.DBSize(ctx).Val(), want.DBSize(ctx).Val(); n != w {
		t.Fatalf("%d keys through the proxy, want %d", n, w)
	}
	if cl.Exists(ctx, "old").Val() != 0 {
		t.Fatal("a key from before the restore is still there")
	}
	for _, k := range []string{"str:int", "k:17", "k:4"} {
		if a, b := cl.Get(ctx, k).Val(), want.Get(ctx, k).Val(); a != b {
			t.Fatalf("GET %s through the proxy: %q, want %q", k, a, b)
		}
	}
	if a, b := cl.HGetAll(ctx, "hash:big").Val(), want.HGetAll(ctx, "hash:big").Val(); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("hash:big differs through the proxy")
	}
	if a, b := cl.XInfoGroups(ctx, "stream").Val(), want.XInfoGroups(ctx, "stream").Val(); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("stream groups %v through the proxy, want %v", a, b)
	}
	if ttl := cl.PTTL(ctx, "hash:small").Val(); ttl <= 0 || ttl > 90*time.Second {
		t.Fatalf("hash:small TTL %v through the proxy", ttl)
	}
	redistest.WaitFor(t, 10*time.Second, "the db to take writes again", func() bool { return cl.Set(ctx, "after", "1", 0).Err() == nil })
	view := call(t, http.MethodGet, c.api+"/v1/jobs/"+id, "tok", nil)
	if r, _ := view.body["restore"].(map[string]any); view.status != 200 || r["from"] != "upload" || r["keys_copied"] == float64(0) {
		t.Fatalf("job view: %d %s", view.status, view.raw)
	}

	// The CLI: a file that does not load is refused (exit 1, the API's
	// error); the good file is restored again, followed to the end.
	home := t.TempDir()
	bad, good := filepath.Join(home, "bad.rdb"), filepath.Join(home, "dump.rdb")
	if err := os.WriteFile(bad, garbageRDB(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, file, 0o600); err != nil {
		t.Fatal(err)
	}
	index := strconv.Itoa(c.db.Index)
	code, out, errs := granaryCLI(t, home, home, "db", "restore", index, "--file", bad, "--api", c.api, "--token", "tok")
	if code != 1 || !strings.Contains(errs, "Ziplist integrity check failed") {
		t.Fatalf("granary db restore of a bad file: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, out, errs = granaryCLI(t, home, home, "db", "restore", index, "--file", good, "--wait", "--api", c.api, "--token", "tok")
	if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "done") {
		t.Fatalf("granary db restore --wait: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if cl.Exists(ctx, "after").Val() != 0 || cl.DBSize(ctx).Val() != want.DBSize(ctx).Val() {
		t.Fatal("the CLI's restore did not replace the db's content")
	}
	if left := c.uploads(); len(left) > 0 {
		t.Fatalf("uploads left in the store: %v", left)
	}
}

// TestRestoreCrash SIGKILLs the keeper and then the leading master while a
// restore is at check (the scratch server up), and again in the middle of
// load, with replacements started: the restore ends done once with each
// step recorded once, the db holds exactly the file's data, no slot
// leaked, the db takes writes, and the killed keepers' scratch servers
// and directories are gone.
func TestRestoreCrash(t *testing.T) {
	c := startRestoreCluster(t)
	ctx := t.Context()
	src, file := typesSource(t, 100_000)
	t.Logf("file: %.1f MB", float64(len(file))/(1<<20))
	// The POST waits for the check, which the first crash interrupts.
	answered := make(chan apiReply, 1)
	go func() { answered <- c.upload(file) }()
	var id string
	redistest.WaitFor(t, 30*time.Second, "the restore job", func() bool {
		jobs, _ := c.store.ActiveJobs(ctx)
		for _, j := range jobs {
			if j.Kind == metadb.JobRestore {
				id = j.ID
			}
		}
		return id != ""
	})
	// At check: once the keeper's scratch server has its directory (the
	// file is being fetched or loaded or measured).
	var killed []int
	k := c.rig.keeper.Pid()
	c.rig.crashWhen(id+" checking in a scratch server", func() bool { return len(scratchDirs(k)) > 0 })
	killed = append(killed, k)
	// At load: once some keys are copied.
	k = c.rig.keeper.Pid()
	c.rig.crashWhen(id+" loading", func() bool {
		j := job(t, c.store, id)
		return j.Step == metadb.StepLoad && j.Data[metadb.ResizeKeysCopied] != "" && j.Data[metadb.ResizeKeysCopied] != "0"
	})
	killed = append(killed, k)
	j := c.waitDone(id, 120*time.Second)
	if rep := <-answered; rep.status != http.StatusAccepted {
		t.Fatalf("restore: %d %s", rep.status, rep.raw)
	}
	assertStepsOnce(t, j)
	throughput(t, j)
	sameDigests(t, digests(t, src.Client(t)), digests(t, c.slot()))
	free, _ := c.store.FreeSlots(ctx, c.pair.ID)
	owners, _ := c.store.SlotOwners(ctx, c.pair.ID)
	if len(free) != 3 || len(owners) != 1 {
		t.Fatalf("slots: free %v, owners %v; want 3 free and the db's", free, owners)
	}
	cl := c.client()
	redistest.WaitFor(t, 10*time.Second, "the db to take writes again", func() bool { return cl.Set(ctx, "after", "1", 0).Err() == nil })
	if left := c.uploads(); len(left) > 0 {
		t.Fatalf("uploads left in the store after the restore: %v", left)
	}
	if db, _ := c.store.DB(ctx, "acme", c.db.Index); db.ReadOnly != "" || db.State != metadb.DBActive {
		t.Fatalf("db after the restore: %+v", db)
	}
	// The killed keepers' scratch servers died with them, and their
	// directories were swept by the keeper that followed.
	for _, pid := range killed {
		if procs := scratchProcs(pid); len(procs) > 0 {
			t.Fatalf("scratch servers of killed keeper %d still run: %v", pid, procs)
		}
		if dirs := scratchDirs(pid); len(dirs) > 0 {
			t.Fatalf("scratch directories of killed keeper %d left: %v", pid, dirs)
		}
	}
}

// crashWhen waits until cond holds, then SIGKILLs the keeper and then the
// leading master and starts replacements.
func (r *crashRig) crashWhen(what string, cond func() bool) {
	r.t.Helper()
	redistest.WaitFor(r.t, 60*time.Second, what, cond)
	r.keeper.Kill()
	killLeader(r.t, r.store, r.masters)
	r.t.Logf("killed the keeper and the leader with %s", what)
	replaceDeadMasters(r.t, r.masters, r.metaAddr, &r.masterN)
	r.startKeeper()
}

// scratchDirs lists the scratch directories of the keeper process pid.
func scratchDirs(pid int) []string {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("granary-restore-%d-*", pid)))
	return dirs
}

// scratchProcs lists the processes whose command line names a scratch
// directory of the keeper process pid (a scratch redis-server).
func scratchProcs(pid int) []string {
	mark := []byte(fmt.Sprintf("granary-restore-%d-", pid))
	var out []string
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, mark) {
			out = append(out, f)
		}
	}
	return out
}

// TestRestoreRoundTrip is the main figure: a 64M db holding every
// data type, TTLs and 100,000 keys is exported, and the export restored
// into a new db of the tenant's: every key's DEBUG DIGEST-VALUE and TTL
// (±1 s) equal. It prints the restore's throughput.
func TestRestoreRoundTrip(t *testing.T) {
	c := startRestoreCluster(t)
	ctx := t.Context()
	fillTypes(t, c.slot(), 100_000)
	want := digests(t, c.slot())

	start := time.Now()
	rep := call(t, http.MethodPost, fmt.Sprintf("%s/v1/dbs/%d/exports", c.api, c.db.Index), "tok", nil)
	if rep.status != http.StatusAccepted {
		t.Fatalf("export: %d %s", rep.status, rep.raw)
	}
	export := fmt.Sprint(rep.body["job"])
	ej := c.waitDone(export, 120*time.Second)
	t.Logf("export %s: %s bytes written in %v", export, ej.Data[metadb.ExportSize], time.Since(start).Round(time.Millisecond))

	_, created, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-2")
	if err != nil {
		t.Fatal(err)
	}
	c.waitDone(created.ID, 20*time.Second)
	target, _ := c.store.DB(ctx, "acme", created.Index)
	start = time.Now()
	rep = call(t, http.MethodPost, fmt.Sprintf("%s/v1/dbs/%d/restore", c.api, target.Index), "tok", map[string]string{"export": export})
	if rep.status != http.StatusAccepted {
		t.Fatalf("restore: %d %s", rep.status, rep.raw)
	}
	rj := c.waitDone(fmt.Sprint(rep.body["job"]), 120*time.Second)
	took := time.Since(start)
	assertStepsOnce(t, rj)
	throughput(t, rj)
	used, _ := strconv.ParseInt(rj.Data[metadb.RestoreUsedBytes], 10, 64)
	t.Logf("round trip: %d keys; restore request to done %v (check measured %.1f MB; %.0f keys/s end to end)",
		len(want), took.Round(time.Millisecond), float64(used)/(1<<20), float64(len(want))/took.Seconds())
	sameDigests(t, want, digests(t, c.pm.ClientDB(t, target.SlotDB)))
	if _, err := c.store.Export(ctx, "acme", export); err != nil {
		t.Fatalf("the export after the restore: %v (a restore never deletes an export)", err)
	}
}

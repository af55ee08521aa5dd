package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// Export of a db as an RDB file (issue 12, item 1) on separate `granary
// master` ×2, `granary keeper` and `granary api` processes sharing an
// object store directory; the file is loaded by a plain redis-server of
// the test's.

type exportCluster struct {
	t       *testing.T
	rig     *crashRig
	store   *metadb.Store
	pair    *metadb.Pair
	pm, pr  *redistest.Server
	db      *metadb.DB
	api     string
	objects string // the object store's directory
}

func startExportCluster(t *testing.T) *exportCluster {
	t.Helper()
	meta, store := metaStore(t)
	ctx := t.Context()
	c := &exportCluster{t: t, store: store, objects: t.TempDir()}
	c.pm, c.pr = redistest.StartPair(t, "maxmemory", "1gb", "databases", "4", "enable-debug-command", "yes")
	var err error
	if c.pair, err = store.AddPair(ctx, "64M", c.pm.Addr, c.pr.Addr, []int{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	c.rig = newCrashRigWith(t, meta.Addr, store, "--store", "dir:"+c.objects)
	_, api := startGranaryListening(t, "--addr", "api", "--metadb-url", "redis://"+meta.Addr, "--admin-token", "adm",
		"--store", "dir:"+c.objects)
	c.api = "http://" + api
	_, job, err := store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "db created", func() bool { return jobDone(t, store, job.ID) })
	c.db, _ = store.DB(ctx, "acme", job.Index)
	return c
}

func jobDone(t *testing.T, s *metadb.Store, id string) bool {
	j, err := s.Job(t.Context(), id)
	return err == nil && j.State == metadb.JobDone
}

// slot is the db's slot on the pair's master.
func (c *exportCluster) slot() *redis.Client { return c.pm.ClientDB(c.t, c.db.SlotDB) }

// fillEveryType writes n keys of every data type into c: strings (some
// integers), lists, sets (intsets and hash tables), sorted sets, hashes and
// streams with a consumer group; one key in five has a TTL of hours.
func fillEveryType(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	for i := 0; i < n; i += 1000 {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j := i; j < min(i+1000, n); j++ {
				k := "k:" + strconv.Itoa(j)
				switch j % 8 {
				case 0:
					p.Set(ctx, k, fillValue(j), 0)
				case 1:
					p.Set(ctx, k, j*7919, 0)
				case 2:
					p.RPush(ctx, k, "a", j, fillValue(j))
				case 3:
					p.SAdd(ctx, k, 1, 2, j) // an intset
				case 4:
					p.SAdd(ctx, k, "x", "y", fillValue(j))
				case 5:
					p.ZAdd(ctx, k, redis.Z{Score: float64(j) / 3, Member: "m"}, redis.Z{Score: -1, Member: fillValue(j)})
				case 6:
					p.HSet(ctx, k, "f", j, "g", fillValue(j))
				case 7:
					p.XAdd(ctx, &redis.XAddArgs{Stream: k, ID: "1-1", Values: []any{"n", j}})
					p.XAdd(ctx, &redis.XAddArgs{Stream: k, ID: "2-1", Values: []any{"v", fillValue(j)}})
					p.XGroupCreate(ctx, k, "g", "0")
					p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{k, ">"}, Count: 1})
				}
				if j%5 == 0 {
					p.Expire(ctx, k, time.Duration(1+j%12)*time.Hour)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// keyStates is every key's DEBUG DIGEST-VALUE and PEXPIRETIME, read in
// pipelines.
func keyStates(t *testing.T, c *redis.Client) map[string]keyState {
	t.Helper()
	ctx := t.Context()
	keys, err := scanAllKeys(t, c)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]keyState, len(keys))
	for i := 0; i < len(keys); i += 1000 {
		batch := keys[i:min(i+1000, len(keys))]
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range batch {
				p.Do(ctx, "DEBUG", "DIGEST-VALUE", k)
				p.PExpireTime(ctx, k)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for j, k := range batch {
			d, _ := cmds[2*j].(*redis.Cmd).StringSlice()
			at := cmds[2*j+1].(*redis.DurationCmd).Val().Milliseconds()
			out[k] = keyState{digest: strings.Join(d, ""), expireAt: at}
		}
	}
	return out
}

// keyState is a key's value digest and its expiry (unix ms; -1 none).
type keyState struct {
	digest   string
	expireAt int64
}

func scanAllKeys(t *testing.T, c *redis.Client) ([]string, error) {
	var out []string
	iter := c.Scan(t.Context(), 0, "", 1000).Iterator()
	for iter.Next(t.Context()) {
		out = append(out, iter.Val())
	}
	return out, iter.Err()
}

// sameKeyStates fails t unless got has want's keys, values and expiries
// (±1 s); it returns how many keys have a TTL.
func sameKeyStates(t *testing.T, want, got map[string]keyState) int {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d keys loaded, want %d", len(got), len(want))
	}
	bad, ttls := 0, 0
	for k, w := range want {
		g, ok := got[k]
		if w.expireAt > 0 {
			ttls++
		}
		if !ok || g.digest != w.digest || (w.expireAt > 0) != (g.expireAt > 0) || max(w.expireAt-g.expireAt, g.expireAt-w.expireAt) > 1000 {
			if bad++; bad <= 5 {
				t.Errorf("key %q: loaded %v (present %v), want %v", k, g, ok, w)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d keys differ", bad)
	}
	return ttls
}

// startExport posts an export of the db and returns its id.
func (c *exportCluster) startExport() string {
	c.t.Helper()
	r := call(c.t, http.MethodPost, fmt.Sprintf("%s/v1/dbs/%d/exports", c.api, c.db.Index), "tok", nil)
	if r.status != http.StatusAccepted {
		c.t.Fatalf("POST export: %d %s", r.status, r.raw)
	}
	id, _ := r.body["job"].(string)
	return id
}

// download GETs the export's file into dir/dump.rdb, checks it against
// both checksum headers and returns its path.
func (c *exportCluster) download(id, dir string) string {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.api+"/v1/exports/"+id, nil)
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" {
		b, _ := io.ReadAll(resp.Body)
		c.t.Fatalf("GET export: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	path := filepath.Join(dir, "dump.rdb")
	f, err := os.Create(path)
	if err != nil {
		c.t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		c.t.Fatal(err)
	}
	sum := h.Sum(nil)
	if got := resp.Header.Get("X-Checksum-SHA256"); got != hex.EncodeToString(sum) {
		c.t.Fatalf("X-Checksum-SHA256 %s, the file's is %x", got, sum)
	}
	if got := resp.Header.Get("Digest"); got != "sha-256="+base64.StdEncoding.EncodeToString(sum) {
		c.t.Fatalf("Digest %s, the file's is %x", got, sum)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.FormatInt(n, 10) {
		c.t.Fatalf("Content-Length %s, got %d bytes", cl, n)
	}
	j := job(c.t, c.store, id)
	if j.Data[metadb.ExportSHA256] != hex.EncodeToString(sum) {
		c.t.Fatalf("the job records SHA-256 %s, the file's is %x", j.Data[metadb.ExportSHA256], sum)
	}
	return path
}

// checkFile runs rdbfile.Check on the file.
func checkFile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := rdbfile.Check(f); err != nil {
		t.Fatalf("Check %s: %v", path, err)
	}
}

// loadFile starts a plain redis-server on the file (its dir, dump.rdb).
func loadFile(t *testing.T, path string) *redis.Client {
	t.Helper()
	return redistest.Start(t, "enable-debug-command", "yes", "dir", filepath.Dir(path), "dbfilename", filepath.Base(path)).Client(t)
}

// TestExportRoundTrip: a 64M db of 100k keys of every type, TTLs on one
// in five, exported through REST from the pair's replica, downloaded with
// its checksum checked, loads in a plain redis-server with every key's
// value and expiry (±1 s) equal to the source's. It logs the export's
// throughput beside `redis-cli --rdb` of the same replica.
func TestExportRoundTrip(t *testing.T) {
	c := startExportCluster(t)
	ctx := t.Context()
	const keys = 100_000
	fillEveryType(t, c.slot(), keys)
	want := keyStates(t, c.slot())
	if len(want) != keys {
		t.Fatalf("filled %d keys, want %d", len(want), keys)
	}
	used, _ := c.pm.Client(t).Info(ctx, "memory").Result()
	start := time.Now()
	id := c.startExport()
	redistest.WaitFor(t, 120*time.Second, "the export to end", func() bool { return job(t, c.store, id).State != metadb.JobRunning })
	wall := time.Since(start)
	j := job(t, c.store, id)
	if j.State != metadb.JobDone {
		t.Fatalf("export %s: %s", j.State, j.Error)
	}
	assertStepsOnce(t, j)
	path := c.download(id, t.TempDir())
	checkFile(t, path)
	ttls := sameKeyStates(t, want, keyStates(t, loadFile(t, path)))

	size, _ := strconv.ParseInt(j.Data[metadb.ExportSize], 10, 64)
	ms, _ := strconv.ParseInt(j.Data[metadb.ResizeCopyMillis], 10, 64)
	dump := time.Duration(ms) * time.Millisecond
	t.Logf("db: %d keys (%d with a TTL), %s", keys, ttls, usedMemoryHuman(used))
	t.Logf("export: %d bytes, %d keys in %v (dump step) / %v (POST to done): %.0f keys/s, %.1f MB/s",
		size, keys, dump, wall.Round(time.Millisecond), float64(keys)/dump.Seconds(), float64(size)/1e6/dump.Seconds())

	// redis-cli --rdb of the same replica, in the same run: a full
	// BGSAVE-style sync of the whole server through the replication
	// protocol.
	out := filepath.Join(t.TempDir(), "cli.rdb")
	host, port, _ := strings.Cut(c.pr.Addr, ":")
	cliStart := time.Now()
	if b, err := exec.CommandContext(ctx, "redis-cli", "-h", host, "-p", port, "--rdb", out).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --rdb: %v\n%s", err, b)
	}
	cliTook := time.Since(cliStart)
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("redis-cli --rdb of the replica: %d bytes in %v: %.0f keys/s, %.1f MB/s",
		st.Size(), cliTook.Round(time.Millisecond), float64(keys)/cliTook.Seconds(), float64(st.Size())/1e6/cliTook.Seconds())

	// The CLI: granary db export --out waits for a second export, then
	// downloads it and checks its SHA-256.
	cliFile := filepath.Join(t.TempDir(), "cli-export.rdb")
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, granaryBin(t), "db", "export", strconv.Itoa(c.db.Index), "--out", cliFile, "--api", c.api, "--token", "tok")
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/config", "PATH=/usr/bin:/bin"}
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "wrote "+cliFile) {
		t.Fatalf("granary db export --out: %v\n%s", err, b)
	}
	checkFile(t, cliFile)
	sameKeyStates(t, want, keyStates(t, loadFile(t, cliFile)))

	// The exports are listed, and kept after the db is dropped.
	r := call(t, http.MethodDelete, fmt.Sprintf("%s/v1/dbs/%d", c.api, c.db.Index), "tok", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("drop: %d %s", r.status, r.raw)
	}
	dropID, _ := r.body["job"].(string)
	redistest.WaitFor(t, 30*time.Second, "the drop done", func() bool { return jobDone(t, c.store, dropID) })
	r = call(t, http.MethodGet, c.api+"/v1/exports", "tok", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.raw), id) {
		t.Fatalf("exports after the drop: %d %s", r.status, r.raw)
	}
	checkFile(t, c.download(id, t.TempDir()))
}

func usedMemoryHuman(info string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory_human:"); ok {
			return "server memory " + v
		}
	}
	return ""
}

// TestExportCrash SIGKILLs the keeper during the dump and then the
// leading master, and starts replacements: the export ends done once, with
// one job, its file whole (Check passes, every key loads), and the pair's
// slots as they were.
func TestExportCrash(t *testing.T) {
	c := startExportCluster(t)
	ctx := t.Context()
	const keys = 300_000
	fillSlot(t, c.slot(), keys)
	want := keyStates(t, c.slot())
	freeBefore, _ := c.store.FreeSlots(ctx, c.pair.ID)
	id := c.startExport()
	var copied string
	redistest.WaitFor(t, 60*time.Second, "the dump under way", func() bool {
		j := job(t, c.store, id)
		copied = j.Data[metadb.ResizeKeysCopied]
		return j.State != metadb.JobRunning || copied != ""
	})
	if j := job(t, c.store, id); j.State != metadb.JobRunning {
		t.Fatalf("the export ended (%s) before the keeper could be killed during its dump", j.State)
	}
	c.rig.keeper.Kill()
	killLeader(t, c.store, c.rig.masters)
	t.Logf("killed keeper k%d and the leader with the dump at %s keys", c.rig.keeperN, copied)
	replaceDeadMasters(t, c.rig.masters, c.rig.metaAddr, &c.rig.masterN)
	c.rig.startKeeper()
	redistest.WaitFor(t, 120*time.Second, "the export to end", func() bool { return job(t, c.store, id).State != metadb.JobRunning })
	j := job(t, c.store, id)
	if j.State != metadb.JobDone {
		t.Fatalf("export %s: %s", j.State, j.Error)
	}
	assertStepsOnce(t, j)
	if by := j.Log[len(j.Log)-1].By; by != fmt.Sprintf("keeper/k%d", c.rig.keeperN) {
		t.Fatalf("dump recorded by %s, want the new keeper", by)
	}
	jobs, err := c.store.Jobs(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, jj := range jobs {
		if jj.Kind == metadb.JobExport {
			n++
		}
	}
	exports, _ := c.store.Exports(ctx, "acme")
	if n != 1 || len(exports) != 1 {
		t.Fatalf("%d export jobs, %d exports listed; want 1 each", n, len(exports))
	}
	path := c.download(id, t.TempDir())
	checkFile(t, path)
	sameKeyStates(t, want, keyStates(t, loadFile(t, path)))
	freeAfter, _ := c.store.FreeSlots(ctx, c.pair.ID)
	owners, _ := c.store.SlotOwners(ctx, c.pair.ID)
	if len(freeAfter) != len(freeBefore) || len(owners) != 1 {
		t.Fatalf("slots: free %v before, %v after; owners %v", freeBefore, freeAfter, owners)
	}
	if db, _ := c.store.DB(ctx, "acme", c.db.Index); db.State != metadb.DBActive || db.Pair != c.pair.ID || db.SlotDB != c.db.SlotDB {
		t.Fatalf("db after the export: %+v", db)
	}
}

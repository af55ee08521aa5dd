package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// Import of a live outside Redis db (issue 12, item 3) on separate
// `granary master` ×2, `granary keeper`, `granary proxy` and `granary api`
// processes; the source is a redis-server of the test's.

const importSecret = "s3cret-import-pw"

type importCluster struct {
	t       *testing.T
	meta    *redistest.Server
	store   *metadb.Store
	pair    *metadb.Pair
	pm      *redistest.Server
	db      *metadb.DB
	api     string
	proxy   string
	masters map[string]*procgroup.Proc
	keeper  *procgroup.Proc
	keeperN int
	masterN int
	outputs []*procgroup.Output
}

func startImportCluster(t *testing.T) *importCluster {
	t.Helper()
	meta, store := metaStore(t)
	ctx := t.Context()
	c := &importCluster{t: t, meta: meta, store: store}
	c.pair, c.pm = crashPair(t, store, "64M", "1gb")
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	url := "redis://" + meta.Addr
	c.masters = startMasters(t, meta.Addr)
	c.startKeeper()
	_, out := startGranaryOutputListening(t, "--addr", "api", "--metadb-url", url, "--admin-token", "adm", "--import-allow", "127.0.0.0/8")
	c.outputs = append(c.outputs, out.Output)
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

func (c *importCluster) startKeeper() {
	c.keeperN++
	p, out := startGranaryOutput(c.t, "keeper", "--metadb-url", "redis://"+c.meta.Addr, "--id", fmt.Sprintf("k%d", c.keeperN),
		"--lease", leaseTTL.String(), "--pairs-poll", "100ms", "--import-allow", "127.0.0.0/8")
	c.keeper = p
	c.outputs = append(c.outputs, out)
}

func (c *importCluster) client() *redis.Client {
	cl := redis.NewClient(&redis.Options{Addr: c.proxy, Username: "acme", Password: "pw", DB: c.db.Index,
		MaxRetries: -1, PoolSize: 2, DialTimeout: time.Second, ReadTimeout: 3 * time.Second, WriteTimeout: time.Second})
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// target is the db's slot on the pair's master.
func (c *importCluster) target() *redis.Client { return c.pm.ClientDB(c.t, c.db.SlotDB) }

func (c *importCluster) post(path string, body any) apiReply {
	return call(c.t, http.MethodPost, c.api+path, "tok", body)
}

func (c *importCluster) jobView(id string) apiReply {
	return call(c.t, http.MethodGet, c.api+"/v1/jobs/"+id, "tok", nil)
}

// importOf is the import part of a job view.
func importOf(r apiReply) map[string]any {
	m, _ := r.body["import"].(map[string]any)
	return m
}

// noSecret fails if the password shows in anything Granary wrote: its
// processes' output, the audit stream, the job's record.
func (c *importCluster) noSecret(jobID string) {
	c.t.Helper()
	for _, out := range c.outputs {
		if strings.Contains(out.String(), importSecret) {
			c.t.Fatalf("a granary process logged the source's password")
		}
	}
	entries, _, err := c.store.AuditLog(c.t.Context(), metadb.AuditQuery{Limit: 1000})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, e := range entries {
		if strings.Contains(fmt.Sprint(e), importSecret) {
			c.t.Fatalf("audit entry holds the password: %+v", e)
		}
	}
	if jobID != "" {
		if j := job(c.t, c.store, jobID); j.State != metadb.JobRunning && strings.Contains(fmt.Sprint(j), importSecret) {
			c.t.Fatalf("ended job %s still holds the password", jobID)
		}
	}
}

// startGranaryOutputListening is startGranaryListening that also returns
// the process's output (with the address).
type listenOutput struct {
	*procgroup.Output
	addr string
}

func startGranaryOutputListening(t *testing.T, addrFlag string, args ...string) (*procgroup.Proc, listenOutput) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := redisproc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p, out := startGranaryOutput(t, append(args, addrFlag, addr)...)
		up := false
		redistest.WaitFor(t, 20*time.Second, "granary "+args[0]+" listening", func() bool {
			if p.Exited() != nil {
				return true
			}
			r, err := http.Get("http://" + addr + "/healthz")
			if err == nil {
				r.Body.Close()
				up = true
			}
			return up
		})
		if up {
			return p, listenOutput{out, addr}
		}
		if attempt < 5 && strings.Contains(out.String(), "address already in use") {
			continue
		}
		t.Fatalf("granary %s exited before it listened: %v\n%s", args[0], p.Exited(), out.String())
	}
}

// importSource starts the outside Redis with keyspace events on and a
// password, filled with keys of several types, some with a TTL.
func importSource(t *testing.T, keys int) (*redistest.Server, *redis.Client) {
	t.Helper()
	src := redistest.Start(t, "notify-keyspace-events", "KEA")
	c := src.Client(t)
	ctx := t.Context()
	if err := c.ConfigSet(ctx, "requirepass", importSecret).Err(); err != nil {
		t.Fatal(err)
	}
	c = redis.NewClient(&redis.Options{Addr: src.Addr, Password: importSecret, PoolSize: 4})
	t.Cleanup(func() { c.Close() })
	for i := 0; i < keys; i += 1000 {
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k := i; k < min(i+1000, keys); k++ {
				key := "k" + strconv.Itoa(k)
				switch k % 4 {
				case 0:
					p.Set(ctx, key, fillValue(k), 0)
				case 1:
					p.HSet(ctx, key, "a", k, "b", fillValue(k))
				case 2:
					p.RPush(ctx, key, k, k+1, k+2)
				case 3:
					p.Set(ctx, key, k, time.Duration(300+k%600)*time.Second)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return src, c
}

// sourceWriter writes about rate commands a second to keys k0…k<keys>:
// SET, INCR, HSET, LPUSH, EXPIRE and DEL. count is how many it sent so
// far; stop ends it and returns when its last write is acknowledged.
func sourceWriter(ctx context.Context, c *redis.Client, keys, rate int) (count, stop func() int64) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var n atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(1, 2))
		const per = 10 // commands per pipeline
		t := time.NewTicker(time.Second * per / time.Duration(rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, _ = c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range per {
					key := "w" + strconv.Itoa(r.IntN(keys))
					switch r.IntN(6) {
					case 0:
						p.Set(ctx, key, r.Int64(), 0)
					case 1:
						p.Incr(ctx, "n"+strconv.Itoa(r.IntN(keys)))
					case 2:
						p.HSet(ctx, "h"+strconv.Itoa(r.IntN(keys)), "f"+strconv.Itoa(r.IntN(8)), r.Int64())
					case 3:
						p.LPush(ctx, "l"+strconv.Itoa(r.IntN(keys)), r.Int64())
					case 4:
						p.Expire(ctx, "k"+strconv.Itoa(r.IntN(keys)), time.Duration(100+r.IntN(500))*time.Second)
					case 5:
						p.Del(ctx, "k"+strconv.Itoa(r.IntN(keys)))
					}
				}
				return nil
			})
			n.Add(per)
		}
	}()
	return n.Load, func() int64 { cancel(); wg.Wait(); return n.Load() }
}

// sameKeys fails unless dst holds exactly src's keys, each with the same
// DUMP and a TTL within a second.
func sameKeys(t *testing.T, src, dst *redis.Client) int {
	t.Helper()
	ctx := t.Context()
	n1, n2 := src.DBSize(ctx).Val(), dst.DBSize(ctx).Val()
	if n1 != n2 {
		t.Fatalf("source holds %d keys, target %d", n1, n2)
	}
	iter := src.Scan(ctx, 0, "", 1000).Iterator()
	var batch []string
	checked := 0
	check := func() {
		read := func(c *redis.Client) []redis.Cmder {
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range batch {
					p.Dump(ctx, k)
					p.PTTL(ctx, k)
				}
				return nil
			})
			if err != nil && !errors.Is(err, redis.Nil) {
				t.Fatal(err)
			}
			return cmds
		}
		a, b := read(src), read(dst)
		for i, k := range batch {
			if a[2*i].(*redis.StringCmd).Val() != b[2*i].(*redis.StringCmd).Val() && !sameContent(t, src, dst, k) {
				t.Fatalf("key %q differs", k)
			}
			ta, tb := a[2*i+1].(*redis.DurationCmd).Val(), b[2*i+1].(*redis.DurationCmd).Val()
			if d := ta - tb; d > time.Second || d < -time.Second {
				t.Fatalf("key %q: TTL %v on the source, %v on the target", k, ta, tb)
			}
		}
		checked += len(batch)
		batch = batch[:0]
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			check()
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	check()
	return checked
}

// sameContent compares a key whose DUMPs differ by its content: a hash
// in a hash table dumps its fields in the table's order, which differs
// between servers.
func sameContent(t *testing.T, a, b *redis.Client, key string) bool {
	t.Helper()
	ctx := t.Context()
	read := func(c *redis.Client) string {
		typ := c.Type(ctx, key).Val()
		switch typ {
		case "hash":
			return typ + fmt.Sprint(c.HGetAll(ctx, key).Val())
		case "list":
			return typ + fmt.Sprint(c.LRange(ctx, key, 0, -1).Val())
		}
		return typ + c.Dump(ctx, key).Val()
	}
	return read(a) == read(b)
}

// noReadOnlyLeft fails if the db is read-only or not active.
func (c *importCluster) noReadOnlyLeft() {
	c.t.Helper()
	db, err := c.store.DB(c.t.Context(), "acme", c.db.Index)
	if err != nil {
		c.t.Fatal(err)
	}
	if db.ReadOnly != "" || db.State != metadb.DBActive {
		c.t.Fatalf("db after the import: state %s, read-only %q", db.State, db.ReadOnly)
	}
}

// TestImport imports a password-protected source of 20,000 keys under
// 1,000 writes/s (SET/INCR/HSET/LPUSH/EXPIRE/DEL), waits until the
// job says it is in step, stops the writer and cuts over. It prints the
// pause from the writer's stop to the cut-over done (target under 2 s;
// it fails only above 15 s: the machine's cores are shared with other
// packages' tests), then checks every key (DUMP and TTL ±1 s) against the
// source, that writes through the proxy work again, and that the password
// is nowhere in logs, answers, the audit stream or the ended job. Then
// each bad input is refused with a 4xx and changes nothing.
func TestImport(t *testing.T) {
	c := startImportCluster(t)
	ctx := t.Context()
	const keys = 20000
	src, sc := importSource(t, keys)
	cl := c.client()
	count, stop := sourceWriter(ctx, sc, keys, 1000)
	writerStart := time.Now()
	source := fmt.Sprintf("redis://:%s@%s", importSecret, src.Addr)
	r := c.post(fmt.Sprintf("/v1/dbs/%d/imports", c.db.Index), map[string]any{"source": source})
	if r.status != http.StatusAccepted {
		t.Fatalf("POST import: %d %s", r.status, r.raw)
	}
	if strings.Contains(string(r.raw), importSecret) {
		t.Fatalf("the answer shows the password: %s", r.raw)
	}
	id, _ := r.body["job"].(string)
	if got := importOf(r)["source"]; got != "redis://"+src.Addr {
		t.Fatalf("job shows source %v, want redis://%s", got, src.Addr)
	}
	// A second import of the same db is a conflict.
	if r := c.post(fmt.Sprintf("/v1/dbs/%d/imports", c.db.Index), map[string]any{"source": source}); r.status != http.StatusConflict {
		t.Fatalf("second import: %d %s, want 409", r.status, r.raw)
	}
	start := time.Now()
	var view apiReply
	redistest.WaitFor(t, 60*time.Second, "the import in step", func() bool {
		view = c.jobView(id)
		return importOf(view)["in_step"] == true && view.body["step"] == string(metadb.StepSync)
	})
	t.Logf("in step after %v: %s", time.Since(start).Round(time.Millisecond), view.raw)
	if strings.Contains(string(view.raw), importSecret) {
		t.Fatalf("the job view shows the password")
	}
	if err := cl.Set(ctx, "x", "1", 0).Err(); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write during the import: %v, want read-only", err)
	}
	// Keep writing while in step for 2,000 more writes (about 2 s).
	inStepAt := count()
	redistest.WaitFor(t, 30*time.Second, "2,000 writes while in step", func() bool { return count() >= inStepAt+2000 })
	if v := c.jobView(id); importOf(v)["in_step"] != true {
		t.Fatalf("the import fell out of step under the writes: %s", v.raw)
	}
	writes := stop()
	rate := float64(writes) / time.Since(writerStart).Seconds()
	stopped := time.Now()
	if r := c.post(fmt.Sprintf("/v1/dbs/%d/imports/%s/cutover", c.db.Index, id), nil); r.status != http.StatusAccepted {
		t.Fatalf("cutover: %d %s", r.status, r.raw)
	}
	redistest.WaitFor(t, 30*time.Second, "the import done", func() bool { return job(t, c.store, id).State != metadb.JobRunning })
	pause := time.Since(stopped)
	j := job(t, c.store, id)
	if j.State != metadb.JobDone {
		t.Fatalf("import ended %s: %s", j.State, j.Error)
	}
	assertStepsOnce(t, j)
	fmt.Printf("import: %d source writes (%.0f/s) during the import; pause from the writer's stop to the cut-over done: %v (target < 2 s)\n",
		writes, rate, pause.Round(time.Millisecond))
	if pause > 15*time.Second {
		t.Fatalf("cut-over took %v, more than the 15 s failure bound", pause)
	}
	n := sameKeys(t, sc, c.target())
	t.Logf("%d keys equal on source and target", n)
	c.noReadOnlyLeft()
	redistest.WaitFor(t, 10*time.Second, "a write through the proxy", func() bool { return cl.Set(ctx, "after", "1", 0).Err() == nil })
	if _, ok := j.Data[metadb.ImportPassword]; ok {
		t.Fatal("the ended job still holds the password")
	}
	c.noSecret(id)
	entries, _, _ := c.store.AuditLog(ctx, metadb.AuditQuery{Tenant: "acme", Limit: 100})
	actions := map[string]int{}
	for _, e := range entries {
		actions[e.Action]++
	}
	if actions[metadb.AuditDBImport] != 2 || actions[metadb.AuditDBImportCutover] != 1 { // the accepted POST and the 409
		t.Fatalf("audit: %v, want 2 db.import and 1 db.import_cutover", actions)
	}

	t.Run("bad input", func(t *testing.T) { importBadInput(t, c, src, sc) })
	t.Run("cancel", func(t *testing.T) { importCancel(t, c, source) })
}

// importCancel starts an import again and cancels it during sync: the job
// ends failed once, the db takes writes again and keeps what was copied.
func importCancel(t *testing.T, c *importCluster, source string) {
	ctx := t.Context()
	r := c.post(fmt.Sprintf("/v1/dbs/%d/imports", c.db.Index), map[string]any{"source": source})
	if r.status != http.StatusAccepted {
		t.Fatalf("POST import: %d %s", r.status, r.raw)
	}
	id, _ := r.body["job"].(string)
	redistest.WaitFor(t, 30*time.Second, "the import at sync", func() bool { return job(t, c.store, id).Step == metadb.StepSync })
	if r := call(t, http.MethodDelete, fmt.Sprintf("%s/v1/dbs/%d/imports/%s", c.api, c.db.Index, id), "tok", nil); r.status != http.StatusAccepted {
		t.Fatalf("DELETE import: %d %s", r.status, r.raw)
	}
	redistest.WaitFor(t, 30*time.Second, "the import ended", func() bool { return job(t, c.store, id).State != metadb.JobRunning })
	j := job(t, c.store, id)
	if j.State != metadb.JobFailed || !strings.Contains(j.Error, "cancelled") {
		t.Fatalf("cancelled import: %s %q", j.State, j.Error)
	}
	assertStepsOnce(t, j)
	if _, ok := j.Data[metadb.ImportPassword]; ok {
		t.Fatal("the cancelled job still holds the password")
	}
	c.noReadOnlyLeft()
	cl := c.client()
	redistest.WaitFor(t, 10*time.Second, "a write through the proxy", func() bool { return cl.Set(ctx, "after-cancel", "1", 0).Err() == nil })
	if r := c.post(fmt.Sprintf("/v1/dbs/%d/imports/%s/cutover", c.db.Index, id), nil); r.status != http.StatusConflict {
		t.Fatalf("cutover of a cancelled import: %d %s, want 409", r.status, r.raw)
	}
	c.noSecret(id)
}

func importBadInput(t *testing.T, c *importCluster, src *redistest.Server, sc *redis.Client) {
	ctx := t.Context()
	off := redistest.Start(t) // notifications off
	deadPort, _ := redisproc.FreePort()
	big := redistest.Start(t, "notify-keyspace-events", "KEA")
	bc := big.Client(t)
	for i := range 7 {
		if err := bc.Set(ctx, "big"+strconv.Itoa(i), strings.Repeat("x", 10<<20), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	pw := func(addr string) string { return fmt.Sprintf("redis://:%s@%s", importSecret, addr) }
	cases := []struct {
		name   string
		source string
		db     int
		status int
		want   string
	}{
		{"unreachable", fmt.Sprintf("redis://127.0.0.1:%d", deadPort), 0, 422, "cannot reach the source"},
		{"no password", "redis://" + src.Addr, 0, 422, "needs a password"},
		{"wrong password", "redis://:nope@" + src.Addr, 0, 422, "refused the password"},
		{"notifications off", "redis://" + off.Addr, 0, 422, "CONFIG SET notify-keyspace-events KEA"},
		{"a pair's master", "redis://" + c.pair.Master, 0, 422, "own servers"},
		{"a pair's replica as localhost", "redis://localhost:" + strings.Split(c.pair.Replica, ":")[1], 0, 422, "own servers"},
		{"the metadb", "redis://" + c.meta.Addr, 0, 422, "own servers"},
		{"private address", "redis://10.1.2.3:6379", 0, 422, "private"},
		{"http URL", "http://example.com:80", 0, 400, "scheme must be redis"},
		{"a path", pw(src.Addr) + "/0", 0, 400, "nothing may follow"},
		{"a query", pw(src.Addr) + "?db=1", 0, 400, "nothing may follow"},
		{"no port", "redis://example.com", 0, 400, "host:port"},
		{"db out of range", pw(src.Addr), 99, 422, "no such db"},
		{"negative db", pw(src.Addr), -1, 400, "out of range"},
		{"too big", "redis://" + big.Addr, 0, 422, "bigger than the target's quota"},
	}
	before, _ := c.store.Jobs(ctx, 1000)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := c.post(fmt.Sprintf("/v1/dbs/%d/imports", c.db.Index), map[string]any{"source": tc.source, "db": tc.db})
			msg, _ := r.body["error"].(string)
			if r.status != tc.status || !strings.Contains(msg, tc.want) {
				t.Fatalf("got %d %s, want %d with %q", r.status, r.raw, tc.status, tc.want)
			}
			if strings.Contains(string(r.raw), importSecret) {
				t.Fatalf("the answer shows the password: %s", r.raw)
			}
			t.Logf("%d %s (%v)", r.status, msg, time.Since(start).Round(time.Millisecond))
		})
	}
	after, _ := c.store.Jobs(ctx, 1000)
	if len(after) != len(before) {
		t.Fatalf("refused imports recorded %d jobs", len(after)-len(before))
	}
	c.noReadOnlyLeft()
	if n := sc.DBSize(ctx).Val(); n == 0 {
		t.Fatal("the source lost its keys")
	}
	c.noSecret("")
}

// TestImportCrash SIGKILLs the keeper during sync's full pass, the
// leading master during sync, then both during the cut-over (held there
// by freezing the source with SIGSTOP, so the keeper's barrier waits),
// with replacements started: the import ends done once (each step once in
// its log), every key equals the source's and no read-only is left
// behind. A keeper that takes over at cutover copies everything again.
func TestImportCrash(t *testing.T) {
	c := startImportCluster(t)
	ctx := t.Context()
	const keys = 20000
	src, sc := importSource(t, keys)
	_, stop := sourceWriter(ctx, sc, keys, 500)
	source := fmt.Sprintf("redis://:%s@%s", importSecret, src.Addr)
	r := c.post(fmt.Sprintf("/v1/dbs/%d/imports", c.db.Index), map[string]any{"source": source})
	if r.status != http.StatusAccepted {
		t.Fatalf("POST import: %d %s", r.status, r.raw)
	}
	id, _ := r.body["job"].(string)
	redistest.WaitFor(t, 30*time.Second, "the import's full pass begun", func() bool {
		j := job(t, c.store, id)
		return j.Step == metadb.StepSync && j.Data[metadb.ResizeKeysCopied] != ""
	})
	c.keeper.Kill()
	t.Logf("killed keeper k%d at sync with %s keys copied", c.keeperN, job(t, c.store, id).Data[metadb.ResizeKeysCopied])
	c.startKeeper()
	redistest.WaitFor(t, 60*time.Second, "the import in step", func() bool {
		return importOf(c.jobView(id))["in_step"] == true
	})
	killLeader(t, c.store, c.masters)
	replaceDeadMasters(t, c.masters, c.meta.Addr, &c.masterN)
	stop()
	// Freeze the source only once the keeper has applied the writer's last
	// changes: it must not be reading the source when it stops.
	stopped := time.Now().Add(200 * time.Millisecond).UnixMilli()
	redistest.WaitFor(t, 30*time.Second, "the last changes applied", func() bool {
		j := job(t, c.store, id)
		at, _ := strconv.ParseInt(j.Data[metadb.ImportLastApply], 10, 64)
		return at > stopped && j.Data[metadb.ImportDirty] == "0"
	})
	if err := src.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			_ = src.Signal(syscall.SIGCONT)
		}
	}()
	if r := c.post(fmt.Sprintf("/v1/dbs/%d/imports/%s/cutover", c.db.Index, id), nil); r.status != http.StatusAccepted {
		t.Fatalf("cutover: %d %s", r.status, r.raw)
	}
	redistest.WaitFor(t, 30*time.Second, "the import at cutover", func() bool { return job(t, c.store, id).Step == metadb.StepCutover })
	c.keeper.Kill()
	killLeader(t, c.store, c.masters)
	t.Logf("killed keeper k%d and the leader with the import at cutover", c.keeperN)
	if err := src.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	replaceDeadMasters(t, c.masters, c.meta.Addr, &c.masterN)
	c.startKeeper()
	redistest.WaitFor(t, 60*time.Second, "the import done", func() bool { return job(t, c.store, id).State != metadb.JobRunning })
	j := job(t, c.store, id)
	if j.State != metadb.JobDone {
		t.Fatalf("import ended %s: %s", j.State, j.Error)
	}
	assertStepsOnce(t, j)
	t.Logf("%d keys equal", sameKeys(t, sc, c.target()))
	c.noReadOnlyLeft()
	c.noSecret(id)
}

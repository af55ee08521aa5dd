package proxy

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// TestConfirmedWrites: with the replica stopped, a confirmed write errors
// at its timeout instead of answering OK (alone and under concurrency);
// once the replica is back an OK write is on the replica when OK returns.
// An async db answers OK meanwhile.
func TestConfirmedWrites(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	conf := e.db("acme", metadb.WriteConfirmed)
	async := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, conf.Index)
	ca := e.client("acme", pass, async.Index)
	ctx := e.ctx
	if err := c.Set(ctx, "warm", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ca.Set(ctx, "warm", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	resume := pause(t, e.replica)
	start := time.Now()
	err := c.Set(ctx, "k", "v", 0).Err()
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "not confirm") {
		t.Fatalf("confirmed write with replica stopped: got %v, want a not-confirmed error", err)
	}
	if took < 250*time.Millisecond || took > 2*time.Second {
		t.Fatalf("error came after %v, want about the 300ms confirm timeout", took)
	}
	// Concurrent writers, pipelined: every one errors, none says OK.
	var wg sync.WaitGroup
	var mu sync.Mutex
	oks := 0
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmds, _ := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for j := 0; j < 5; j++ {
					p.Incr(ctx, "counter")
				}
				return nil
			})
			for _, cmd := range cmds {
				if cmd.Err() == nil {
					mu.Lock()
					oks++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if oks != 0 {
		t.Fatalf("%d writes answered OK while the replica was stopped", oks)
	}
	if err := ca.Set(ctx, "ak", "v", 0).Err(); err != nil {
		t.Fatalf("async write with replica stopped: %v", err)
	}

	resume()
	rc := e.replica.ClientDB(t, conf.SlotDB)
	ok := 0
	for i := 0; i < 50; i++ {
		key := "after" + string(rune('a'+i%26)) + strings.Repeat("x", i)
		if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
			// The first writes after SIGCONT may still race the
			// replica's catch-up; an error is allowed, a lie is not.
			continue
		}
		ok++
		if got, err := rc.Get(ctx, key).Result(); err != nil || got != "v" {
			t.Fatalf("write %q answered OK but the replica has %q, %v", key, got, err)
		}
	}
	if ok < 45 {
		t.Fatalf("only %d of 50 writes confirmed after the replica came back", ok)
	}
	if n := readCounter(e.p.metrics.unconfirmed); n < 101 {
		t.Fatalf("unconfirmed writes metric %v, want >= 101", n)
	}
}

// TestQuotaBan: under a ban, denyoom commands get -OOM while reads, DEL,
// UNLINK, EXPIRE and FLUSHDB work; the ban lifts by message on the same
// connection.
func TestQuotaBan(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	for _, k := range []string{"a", "b", "c", "d"} {
		if got := r.do("SET", k, "v"); got != "+OK" {
			t.Fatalf("set %s: %s", k, got)
		}
	}
	r.do("RPUSH", "l", "1")
	e.ban("acme", db.Index, true)
	for _, tc := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"SET", "x", "y"}, "-OOM db 0 is over its 64M quota"},
		{[]string{"INCR", "n"}, "-OOM"},
		{[]string{"LPUSH", "l", "2"}, "-OOM"},
		{[]string{"HSET", "h", "f", "v"}, "-OOM"},
		{[]string{"EVAL", "return redis.call('set', 'x', 'y')", "0"}, "-OOM"},
		{[]string{"GET", "a"}, "$v"},
		{[]string{"EVAL_RO", "return redis.call('get', 'a')", "0"}, "$v"},
		{[]string{"LRANGE", "l", "0", "-1"}, "[1]"},
		{[]string{"DEL", "a"}, ":1"},
		{[]string{"UNLINK", "b"}, ":1"},
		{[]string{"EXPIRE", "c", "100"}, ":1"},
		{[]string{"LPOP", "l"}, "$1"},
		{[]string{"MULTI"}, "+OK"},
		{[]string{"SET", "x", "y"}, "-OOM"},
		{[]string{"EXEC"}, "-EXECABORT"},
		{[]string{"FLUSHDB"}, "+OK"},
		{[]string{"DBSIZE"}, ":0"},
	} {
		if got := r.do(tc.cmd...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("banned %v: got %q, want prefix %q", tc.cmd, got, tc.want)
		}
	}
	e.ban("acme", db.Index, false)
	if got := r.do("SET", "x", "y"); got != "+OK" {
		t.Fatalf("after the ban lifted, on the same connection: %q", got)
	}
}

// TestWriteHold: writes to a held db wait (reads do not), are released in
// order to the new route when the hold ends, and fail with a clear error
// when the hold passes its deadline. The proxy acknowledges the hold's
// version in metadb only after writes in flight have completed.
func TestWriteHold(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	ctx := e.ctx
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	v := e.hold("acme", db.Index, true, time.Now().Add(10*time.Second))
	e.waitFor("hold acknowledged", func() bool {
		ms, err := e.store.Members(ctx, metadb.KindProxy, time.Minute)
		return err == nil && len(ms) == 1 && ms[0].AppliedVersion >= v
	})

	type result struct {
		cmds []redis.Cmder
		err  error
	}
	done := make(chan result, 1)
	go func() {
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "a", "1", 0)
			p.Set(ctx, "a", "2", 0)
			for i := 0; i < 3; i++ {
				p.Incr(ctx, "n")
			}
			p.Get(ctx, "a")
			return nil
		})
		done <- result{cmds, err}
	}()
	// Reads are not held.
	if got := c.Get(ctx, "before").Val(); got != "1" {
		t.Fatalf("read during hold: %q", got)
	}
	// Once its client waits in the hold, the pipeline cannot return
	// before the snapshot changes or the hold's deadline (10s) passes.
	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	e.waitFor("writes queued", func() bool {
		select {
		case r := <-done:
			t.Fatalf("held writes returned during the hold: %v", r.err)
		default:
		}
		return st.held.Load() > 0
	})
	if n := e.slot(db).Exists(ctx, "a").Val(); n != 0 {
		t.Fatal("a held write reached the old slot")
	}

	// Cut over as a resize would: new slot, then release.
	free, err := e.store.FreeSlots(ctx, e.pair.ID)
	if err != nil || len(free) == 0 {
		t.Fatalf("free slots: %v %v", free, err)
	}
	oldSlot := db.SlotDB
	moved, err := e.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.SlotDB = free[0]
		return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(d, e.pair)}}}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.hold("acme", db.Index, false, time.Time{})
	r := <-done
	if r.err != nil {
		t.Fatalf("released writes: %v", r.err)
	}
	if got := r.cmds[5].(*redis.StringCmd).Val(); got != "2" {
		t.Fatalf("read after the released writes: %q, want 2", got)
	}
	newSlot := e.slot(moved)
	if got := newSlot.Get(ctx, "a").Val(); got != "2" {
		t.Fatalf("new slot a=%q, want 2 (writes in order)", got)
	}
	if got := newSlot.Get(ctx, "n").Val(); got != "3" {
		t.Fatalf("new slot n=%q, want 3", got)
	}
	if n := e.master.ClientDB(t, oldSlot).Exists(ctx, "a", "n").Val(); n != 0 {
		t.Fatal("released writes reached the old slot")
	}

	// A hold past its deadline fails the queued writes and writes nothing.
	e.hold("acme", db.Index, true, time.Now().Add(300*time.Millisecond))
	start := time.Now()
	err = c.Set(ctx, "late", "1", 0).Err()
	if err == nil || !strings.Contains(err.Error(), "TRYAGAIN") || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("write past the hold deadline: %v after %v", err, time.Since(start))
	}
	if newSlot.Exists(ctx, "late").Val() != 0 {
		t.Fatal("a write that failed its hold was written")
	}
}

// TestLeaseFencing: when the lease cannot be renewed the proxy refuses
// writes (reads go on), and takes writes again once it is renewed.
func TestLeaseFencing(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	if got := r.do("SET", "k", "v"); got != "+OK" {
		t.Fatal(got)
	}
	resume := pause(t, e.meta)
	e.waitFor("self-fencing", func() bool { return time.Now().UnixNano() > e.p.fenceAt.Load() })
	if got := r.do("SET", "k", "w"); !strings.HasPrefix(got, "-READONLY") {
		t.Fatalf("write while fenced: %q", got)
	}
	if got := r.do("GET", "k"); got != "$v" {
		t.Fatalf("read while fenced: %q", got)
	}
	resume()
	e.waitFor("lease renewed", func() bool { return time.Now().UnixNano() < e.p.fenceAt.Load() })
	if got := r.do("SET", "k", "w"); got != "+OK" {
		t.Fatalf("write after renewal: %q", got)
	}
	_ = db
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ms, err := e.store.LiveMembers(ctx, metadb.KindProxy)
	if err != nil || len(ms) != 1 || ms[0].Addr != e.addr {
		t.Fatalf("live proxies: %+v, %v", ms, err)
	}
}

// TestConfirmedGroupCommit: Redis runs nothing behind a blocked WAIT on a
// connection, so writes that arrive while one is blocked are confirmed
// together by a single WAIT once it returns: every one is answered OK only
// after the replica has it, with far fewer WAITs than writes.
func TestConfirmedGroupCommit(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.BackendConns = 1
		c.ConfirmTimeout = 10 * time.Second
	})
	pass := e.tenant("acme")
	conf := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, conf.Index)
	ctx := e.ctx
	if err := c.Set(ctx, "warm", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	mc := e.master.Client(t)
	waits := func() int { return cmdstat(t, mc, "wait") }
	w0 := waits()

	resume := pause(t, e.replica)
	const writers = 30
	errs := make(chan error, writers+1)
	write := func(key string) {
		cl := e.client("acme", pass, conf.Index)
		errs <- cl.Set(ctx, key, "v", 0).Err()
	}
	go write("first")
	e.waitBlocked(1) // its WAIT is blocked on the master
	for i := 0; i < writers; i++ {
		go write(fmt.Sprintf("k%d", i))
	}
	// All of them sent to the master, queued behind the blocked WAIT (the
	// first write's own OK came back before it).
	g := e.p.group(e.master.Addr, conf.SlotDB, e.p.cfg.TenantUser)
	e.waitFor("writes queued behind the WAIT", func() bool {
		bc := g.conns[0].Load()
		return bc != nil && bc.busy.Load() >= writers+1
	})
	resume()
	rc := e.replica.ClientDB(t, conf.SlotDB)
	for i := 0; i < writers+1; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("confirmed write: %v", err)
		}
	}
	for i := 0; i < writers; i++ {
		if rc.Exists(ctx, fmt.Sprintf("k%d", i)).Val() != 1 {
			t.Fatalf("k%d acknowledged but not on the replica", i)
		}
	}
	if n := waits() - w0; n > 4 {
		t.Fatalf("%d WAITs for %d confirmed writes, want them grouped (at most 4)", n, writers+1)
	}
}

// TestReadOnly: while a job replaces a db's content the route is read-only:
// every write, scripted or in a transaction, is refused with nothing
// written, reads work, and writes come back on the same connection once
// it clears.
func TestReadOnly(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	if got := r.do("SET", "a", "v"); got != "+OK" {
		t.Fatalf("set: %s", got)
	}
	setRO := func(reason string) {
		t.Helper()
		if _, err := e.store.SetReadOnly(e.ctx, nil, "test", "acme", db.Index, reason); err != nil {
			t.Fatal(err)
		}
		e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d != nil && d.readOnly == reason })
	}
	setRO("restoring")
	for _, tc := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"SET", "x", "y"}, "-ERR db 0 is read-only while restoring"},
		{[]string{"DEL", "a"}, "-ERR db 0 is read-only"},
		{[]string{"FLUSHDB"}, "-ERR db 0 is read-only"},
		{[]string{"EVAL", "return redis.call('set', 'x', 'y')", "0"}, "-ERR db 0 is read-only"},
		{[]string{"GET", "a"}, "$v"},
		{[]string{"EVAL_RO", "return redis.call('get', 'a')", "0"}, "$v"},
		{[]string{"MULTI"}, "+OK"},
		{[]string{"SET", "x", "y"}, "+QUEUED"},
		{[]string{"EXEC"}, "-ERR db 0 is read-only"},
		{[]string{"EXISTS", "x"}, ":0"},
		{[]string{"DBSIZE"}, ":1"},
	} {
		if got := r.do(tc.cmd...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("read-only %v: got %q, want prefix %q", tc.cmd, got, tc.want)
		}
	}
	setRO("")
	if got := r.do("SET", "x", "y"); got != "+OK" {
		t.Fatalf("after read-only cleared, on the same connection: %q", got)
	}
}

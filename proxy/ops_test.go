package proxy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// cmdstat reads how many times a server ran a command.
func cmdstat(t *testing.T, c *redis.Client, name string) int {
	t.Helper()
	info := c.Info(t.Context(), "commandstats").Val()
	i := strings.Index(info, "cmdstat_"+name+":calls=")
	if i < 0 {
		return 0
	}
	s := info[i+len("cmdstat_"+name+":calls="):]
	n := 0
	for _, ch := range s {
		if ch < '0' || ch > '9' {
			break
		}
		n = n*10 + int(ch-'0')
	}
	return n
}

// TestReadYourWrites: reads go to the replica, except a connection's reads
// of a db it wrote, which go to the master until the replica is known to
// have the write (async mode: a WAIT 0 0 probe says so; confirmed mode: the
// confirmation itself).
func TestReadYourWrites(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	async := e.db("acme", metadb.WriteAsync)
	conf := e.db("acme", metadb.WriteConfirmed)
	m, rep := e.master.Client(t), e.replica.Client(t)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	r.do("SELECT", "0")
	// A reader that never wrote reads from the replica.
	other := e.raw()
	other.do("AUTH", "acme", pass)
	before := cmdstat(t, rep, "get")
	other.do("GET", "x")
	if cmdstat(t, rep, "get") != before+1 {
		t.Fatal("a plain read did not go to the replica")
	}
	// Async: write then read, also in one pipeline, reads from the master.
	mb := cmdstat(t, m, "get")
	r.send(string(appendCommandStr(nil, "SET", "x", "1")) + string(appendCommandStr(nil, "GET", "x")))
	if r.reply() != "+OK" || r.reply() != "$1" {
		t.Fatal("pipelined write+read")
	}
	if got := r.do("GET", "x"); got != "$1" {
		t.Fatalf("read after own write: %q", got)
	}
	if cmdstat(t, m, "get") != mb+2 {
		t.Fatalf("reads after an async write did not go to the master")
	}
	// Once the replica acknowledged (REPLCONF ACK comes every second) and
	// a probe saw it, reads go back to the replica.
	e.waitFor("reads back on the replica", func() bool {
		rb := cmdstat(t, rep, "get")
		r.do("GET", "x")
		return cmdstat(t, rep, "get") == rb+1
	})
	// A pipeline that writes two dbs reads both back from where it wrote.
	mb = cmdstat(t, m, "get")
	r.send(string(appendCommandStr(nil, "SET", "x", "2")) + string(appendCommandStr(nil, "SELECT", "1")) +
		string(appendCommandStr(nil, "SET", "w", "1")) + string(appendCommandStr(nil, "SELECT", "0")) +
		string(appendCommandStr(nil, "GET", "x")))
	for _, want := range []string{"+OK", "+OK", "+OK", "+OK", "$2"} {
		if got := r.reply(); got != want {
			t.Fatalf("two-db pipeline: got %q, want %q", got, want)
		}
	}
	if got := r.do("GET", "x"); got != "$2" || cmdstat(t, m, "get") != mb+2 {
		t.Fatalf("reads after a two-db pipeline: %q, master gets %d", got, cmdstat(t, m, "get")-mb)
	}
	// Confirmed: once the write is confirmed the replica has it.
	r.do("SELECT", "1")
	if got := r.do("SET", "z", "1"); got != "+OK" {
		t.Fatal(got)
	}
	rb := cmdstat(t, rep, "get")
	if got := r.do("GET", "z"); got != "$1" || cmdstat(t, rep, "get") != rb+1 {
		t.Fatalf("read after a confirmed write: %q, not from the replica", got)
	}
	_, _ = async, conf
}

// TestReadYourWritesConnDeath: when the shared connection that carried an
// async write dies before the replica is known to have the write, the
// writer's reads of that db stay on the master (the replica here is stopped
// and has not got it), until a later write is acknowledged.
func TestReadYourWritesConnDeath(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	m, rep := e.master.Client(t), e.replica.Client(t)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	r.do("SELECT", "0")

	resume := pause(t, e.replica)
	if got := r.do("SET", "k", "v1"); got != "+OK" {
		t.Fatalf("async SET: %q", got)
	}
	// Cut the proxy's connections to the master and wait until the shared
	// one that carried the SET is seen dead.
	sc := e.p.group(e.master.Addr, db.SlotDB, e.p.cfg.TenantUser).conns[0].Load()
	if sc == nil || sc.dead.Load() {
		t.Fatal("no live shared connection to the master")
	}
	if err := m.ClientKillByFilter(t.Context(), "TYPE", "normal").Err(); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the shared connection to the master dead", sc.dead.Load)

	mb := cmdstat(t, m, "get")
	if got := r.do("GET", "k"); got != "$v1" {
		t.Fatalf("read after own write, its connection dead: %q", got)
	}
	if got := r.do("GET", "k"); got != "$v1" {
		t.Fatalf("second read: %q", got)
	}
	if n := cmdstat(t, m, "get") - mb; n != 2 {
		t.Fatalf("%d of 2 reads went to the master", n)
	}

	// A later write, once acknowledged, covers the first one: reads go
	// back to the replica.
	resume()
	if got := r.do("SET", "k", "v2"); got != "+OK" {
		t.Fatalf("second SET: %q", got)
	}
	e.waitFor("reads back on the replica", func() bool {
		rb := cmdstat(t, rep, "get")
		got := r.do("GET", "k")
		return cmdstat(t, rep, "get") == rb+1 && got == "$v2"
	})
}

// TestReadYourWritesDedicated: async writes made on a dedicated connection
// (EXEC, a blocking pop) are read back from the master too; the replica
// here is stopped and has neither.
func TestReadYourWritesDedicated(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	m := e.master.Client(t)
	if err := e.slot(db).RPush(t.Context(), "list", "a").Err(); err != nil {
		t.Fatal(err)
	}
	rc := e.replica.ClientDB(t, db.SlotDB)
	e.waitFor("the replica has the list", func() bool {
		return rc.LLen(t.Context(), "list").Val() == 1
	})
	pause(t, e.replica)

	tx := e.raw()
	tx.do("AUTH", "acme", pass)
	tx.do("MULTI")
	tx.do("SET", "k", "v1")
	if got := tx.do("EXEC"); got != "[+OK]" {
		t.Fatalf("EXEC: %q", got)
	}
	mb := cmdstat(t, m, "get")
	if got := tx.do("GET", "k"); got != "$v1" || cmdstat(t, m, "get") != mb+1 {
		t.Fatalf("read after own transaction: %q, from the master: %v", got, cmdstat(t, m, "get") == mb+1)
	}

	pop := e.raw()
	pop.do("AUTH", "acme", pass)
	if got := pop.do("BLPOP", "list", "1"); got != "[list a]" {
		t.Fatalf("BLPOP: %q", got)
	}
	if got := pop.do("LLEN", "list"); got != ":0" {
		t.Fatalf("read after own blocking pop: %q", got)
	}
}

// TestDrain: at shutdown in-flight commands finish (a BLPOP waiting for
// data gets its answer), new connections are refused, and the proxy
// deregisters.
func TestDrain(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, 0)
	ctx := e.ctx
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.BLPop(ctx, 3*time.Second, "nothing").Result()
		done <- err
	}()
	e.waitBlocked(1)
	start := time.Now()
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil && err != redis.Nil {
		t.Logf("blpop during drain: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("drain took %v", time.Since(start))
	}
	if nc, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		nc.Close()
		t.Fatal("still accepting after shutdown")
	}
	ms, err := e.store.Members(ctx, metadb.KindProxy, time.Minute)
	if err != nil || len(ms) != 0 {
		t.Fatalf("after shutdown: members %v, %v", ms, err)
	}
}

// TestMetrics: /metrics serves ops by class and db, latency and the
// proxy's own counters.
func TestMetrics(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, 0)
	for i := 0; i < 2*latencySample; i++ {
		c.Set(e.ctx, "k", "v", 0)
		c.Get(e.ctx, "k")
	}
	e.waitFor("metrics listener", func() bool { return e.p.metricsAddr() != "" })
	resp, err := http.Get("http://" + e.p.metricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`granary_proxy_ops_total{class="write",db="acme/0"} 16`,
		`granary_proxy_ops_total{class="read",db="acme/0"} 16`,
		`granary_proxy_latency_seconds_bucket{class="write",db="acme/0",le=`,
		`granary_proxy_confirm_lag_seconds_count 16`,
		`granary_proxy_held_writes 0`,
		`granary_proxy_clients 1`,
		`granary_proxy_unconfirmed_writes_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestDirectReads: a lone read's reply is written by the backend reader
// (see sendRead). Replies stay in order and intact when the tenant sends
// more before reading, when the reply is too big to write at once (the
// client goroutine is woken to finish it), and with an idle timeout on.
func TestDirectReads(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.IdleTimeout = time.Minute })
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	big := strings.Repeat("b", 4<<20)
	for k, v := range map[string]string{"a": "1", "b": "2", "big": big} {
		if err := c.Set(e.ctx, k, v, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	e.waitFor("the replica has the values", func() bool {
		return e.replica.ClientDB(t, db.SlotDB).Exists(e.ctx, "a", "b", "big").Val() == 3
	})
	r := e.raw()
	if got := r.do("AUTH", "acme", pass); got != "+OK" {
		t.Fatal(got)
	}
	if got := r.do("SELECT", strconv.Itoa(db.Index)); got != "+OK" {
		t.Fatal(got)
	}
	// Separate writes, each a lone request when it arrives; nothing read
	// in between.
	var want []string
	for i := 0; i < 200; i++ {
		k := []string{"a", "b", "big", "missing"}[i%4]
		r.send(string(appendCommandStr(nil, "GET", k)))
		switch k {
		case "a":
			want = append(want, "$1")
		case "b":
			want = append(want, "$2")
		case "big":
			want = append(want, "$"+big)
		default:
			want = append(want, "$nil")
		}
	}
	for i, w := range want {
		if got := r.reply(); got != w {
			t.Fatalf("reply %d: %d bytes %.20q, want %d bytes %.20q", i, len(got), got, len(w), w)
		}
	}
	if got := r.do("PING"); got != "+PONG" {
		t.Fatalf("PING after: %q", got)
	}
	// A tenant that half-closes right after a read still gets all of its
	// reply, however much of it the backend reader could write at once
	// (32 MB is more than the socket buffers take).
	huge := strings.Repeat("h", 32<<20)
	if err := c.Set(e.ctx, "huge", huge, 0).Err(); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the replica has huge", func() bool {
		return e.replica.ClientDB(t, db.SlotDB).StrLen(e.ctx, "huge").Val() == int64(len(huge))
	})
	for i := 0; i < 3; i++ {
		h := e.raw()
		if got := h.do("AUTH", "acme", pass); got != "+OK" {
			t.Fatal(got)
		}
		if got := h.do("SELECT", strconv.Itoa(db.Index)); got != "+OK" {
			t.Fatal(got)
		}
		h.send(string(appendCommandStr(nil, "GET", "huge")))
		if err := h.nc.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if got := h.reply(); got != "$"+huge {
			t.Fatalf("reply after a half-close: %d bytes, want %d", len(got), len(huge)+1)
		}
	}
	// Sampled batches are direct too: the backend reader records their
	// latency. Lone reads, one at a time: about one batch in latencySample
	// is sampled and counts for latencySample (a wake-up that finds no
	// whole request is a batch too, so the exact number may vary).
	lat := &e.p.dbState(dbKey{"acme", uint32(db.Index)}).lat[classRead]
	before := histCount(lat)
	for i := 0; i < 4*latencySample; i++ {
		if got := r.do("GET", "a"); got != "$1" {
			t.Fatal(got)
		}
	}
	// The reader records a sample just after it writes the reply.
	e.waitFor("read latency recorded", func() bool { return histCount(lat)-before >= latencySample })
	if got := histCount(lat) - before; got%latencySample != 0 {
		t.Fatalf("read latency samples: %d, not a multiple of %d", got, latencySample)
	}
}

func histCount(h *histogram) uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// TestDirectWrites: a lone async write's reply is written by the backend
// reader too (see directOK), which also releases its in-flight count. Lone
// writes are answered in order and applied once; the count drops while the
// client sits idle, so a resize hold is acknowledged without waiting for the
// client's next request; and the client's next read still sees its write
// (it goes to the master).
func TestDirectWrites(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	r := e.raw()
	if got := r.do("AUTH", "acme", pass); got != "+OK" {
		t.Fatal(got)
	}
	if got := r.do("SELECT", strconv.Itoa(db.Index)); got != "+OK" {
		t.Fatal(got)
	}
	for i := 1; i <= 50; i++ {
		if got := r.do("INCR", "n"); got != ":"+strconv.Itoa(i) {
			t.Fatalf("INCR %d: %q", i, got)
		}
	}
	if got := e.slot(db).Get(e.ctx, "n").Val(); got != "50" {
		t.Fatalf("n on the master: %q, want 50", got)
	}

	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	e.waitFor("no write in flight", func() bool { return st.inflight.Load() == 0 })
	v := e.hold("acme", db.Index, true, time.Now().Add(10*time.Second))
	e.waitFor("hold acknowledged while the client is idle", func() bool {
		ms, err := e.store.Members(e.ctx, metadb.KindProxy, time.Minute)
		return err == nil && len(ms) == 1 && ms[0].AppliedVersion >= v
	})
	e.hold("acme", db.Index, false, time.Time{})

	// Once the replica is known to have every write, reads go there; a
	// lone write sends the next read back to the master.
	m, rep := e.master.Client(t), e.replica.Client(t)
	for i := 0; i < 3; i++ {
		e.waitFor("reads back on the replica", func() bool {
			rb := cmdstat(t, rep, "get")
			r.do("GET", "n")
			return cmdstat(t, rep, "get") == rb+1
		})
		val := strconv.Itoa(1000 + i)
		if got := r.do("SET", "k", val); got != "+OK" {
			t.Fatal(got)
		}
		mb := cmdstat(t, m, "get")
		if got := r.do("GET", "k"); got != "$"+val {
			t.Fatalf("read after a lone write: %q, want %q", got, val)
		}
		if cmdstat(t, m, "get") != mb+1 {
			t.Fatal("the read after a lone async write did not go to the master")
		}
	}
}

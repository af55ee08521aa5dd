package proxy

import (
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
)

// TestBadInput: malformed RESP and oversized headers get an error and the
// connection is closed; before AUTH only AUTH/HELLO/QUIT work and limits
// are tighter; nothing of it changes data.
func TestBadInput(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	authed := func() *rawConn {
		r := e.raw()
		if got := r.do("AUTH", "acme", pass); got != "+OK" {
			t.Fatal(got)
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		auth  bool
		input string
		want  string
	}{
		{"huge multibulk", true, "*2147483647\r\n", "-ERR Protocol error: invalid multibulk length"},
		{"negative bulk", true, "*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"},
		{"1 GB bulk header", true, "*2\r\n$3\r\nSET\r\n$1073741824\r\n", "-ERR Protocol error: invalid bulk length"},
		{"not a bulk", true, "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'"},
		{"garbage after bulk", true, "*1\r\n$4\r\nPINGxx", "-ERR Protocol error: expected CRLF"},
		{"multibulk not a number", true, "*x\r\n", "-ERR Protocol error: invalid multibulk length"},
		{"unbalanced quotes", true, "SET k \"v\r\n", "-ERR Protocol error: unbalanced quotes"},
		{"inline too big", true, strings.Repeat("a", 70000), "-ERR Protocol error: too big inline request"},
		{"unauthenticated multibulk", false, "*11\r\n", "-ERR Protocol error: invalid multibulk length"},
		{"unauthenticated big bulk", false, "*2\r\n$4\r\nAUTH\r\n$20000\r\n", "-ERR Protocol error: invalid bulk length"},
		{"unauthenticated inline", false, strings.Repeat("a", 2000), "-ERR Protocol error: too big inline request"},
	} {
		var r *rawConn
		if tc.auth {
			r = authed()
		} else {
			r = e.raw()
		}
		r.send(tc.input)
		if got := r.reply(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		if !r.closed() {
			t.Errorf("%s: connection left open", tc.name)
		}
	}

	// Before AUTH: errors, the connection stays usable.
	r := e.raw()
	for _, cmd := range [][]string{{"GET", "k"}, {"SET", "k", "v"}, {"SELECT", "0"}, {"PING"}, {"NOSUCH"}, {"HELLO", "2"}} {
		if got := r.do(cmd...); !strings.HasPrefix(got, "-NOAUTH") {
			t.Errorf("%v before AUTH: %q", cmd, got)
		}
	}
	if got := r.do("AUTH", "acme", "wrong"); !strings.HasPrefix(got, "-WRONGPASS") {
		t.Errorf("bad AUTH: %q", got)
	}
	if got := r.do("HELLO", "2", "AUTH", "acme", pass); !strings.HasPrefix(got, "[server redis version") {
		t.Errorf("HELLO 2 AUTH: %q", got)
	}
	if got := r.do("NOSUCH", "x"); !strings.HasPrefix(got, "-ERR unknown command 'NOSUCH'") {
		t.Errorf("unknown command: %q", got)
	}
	if got := r.do("GET"); !strings.HasPrefix(got, "-ERR wrong number of arguments for 'get'") {
		t.Errorf("arity: %q", got)
	}
	if got := r.do("QUIT"); got != "+OK" || !r.closed() {
		t.Errorf("QUIT: %q", got)
	}

	// A huge bulk announced and not sent costs memory only as it arrives.
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	big := authed()
	big.send("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$400000000\r\n" + strings.Repeat("x", 1<<20))
	// Measured once the proxy has read all of it (nothing left queued on
	// either end of any tenant connection), garbage collected.
	e.waitFor("the proxy read the 1 MB", func() bool { return queued(big.nc) == 0 && e.tenantInput() == 0 })
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Errorf("a 400 MB bulk header with 1 MB of data grew the heap by %d MB", grew>>20)
	}
	big.nc.Close()
	// A genuinely large value works.
	c := e.client("acme", pass, db.Index)
	val := strings.Repeat("v", 8<<20)
	if err := c.Set(e.ctx, "big", val, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(e.ctx, "big").Val(); got != val {
		t.Fatalf("8 MB value came back with %d bytes", len(got))
	}
	if got := e.slot(db).Exists(e.ctx, "k").Val(); got != 0 {
		t.Fatal("an aborted request wrote")
	}
}

// TestManyConnections: 10k connections opened (half of them at once) and
// dropped, some mid-request; the proxy lets them all go and its memory and
// goroutines return to where they were.
func TestManyConnections(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxClients = 6000 })
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteAsync)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	baseG := runtime.NumGoroutine()
	inputs := []string{"", "*1\r\n$4\r\nPI", "AUTH acme wrong\r\n", "*2\r\n$4\r\nAUTH\r\n$" + "30\r\n" + pass, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"}
	var peak runtime.MemStats
	for round := 0; round < 2; round++ {
		conns := make([]net.Conn, 0, 5000)
		for i := 0; i < 5000; i++ {
			nc, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatalf("dial %d: %v", i, err)
			}
			if in := inputs[i%len(inputs)]; in != "" {
				nc.Write([]byte(in))
			}
			conns = append(conns, nc)
		}
		e.waitFor("connections admitted", func() bool { return e.p.nclients.Load() >= 4990 })
		runtime.ReadMemStats(&peak)
		for _, nc := range conns {
			nc.Close()
		}
		e.waitFor("connections gone", func() bool { return e.p.nclients.Load() == 0 })
	}
	perConn := (int64(peak.HeapInuse+peak.StackInuse) - int64(base.HeapInuse+base.StackInuse)) / 5000
	t.Logf("memory per idle connection: %d bytes", perConn)
	if limit := int64(16 << 10); raceEnabled && perConn > 4*limit || !raceEnabled && perConn > limit {
		t.Errorf("%d bytes per connection", perConn)
	}
	e.waitFor("goroutines back", func() bool { return runtime.NumGoroutine() <= baseG+20 })
	runtime.GC()
	var end runtime.MemStats
	runtime.ReadMemStats(&end)
	if grew := int64(end.HeapInuse) - int64(base.HeapInuse); grew > 32<<20 {
		t.Errorf("heap grew by %d MB after the connections left", grew>>20)
	}
	// Still serving.
	if err := e.client("acme", pass, 0).Set(e.ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestMaxClients: past the client limit a connection gets Redis's error and
// is closed; the ones admitted keep working.
func TestMaxClients(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxClients = 2 })
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteAsync)
	a, b := e.raw(), e.raw()
	e.waitFor("two clients", func() bool { return e.p.nclients.Load() == 2 })
	third := e.raw()
	if got := third.reply(); got != "-ERR max number of clients reached" || !third.closed() {
		t.Fatalf("third client: %q", got)
	}
	for _, r := range []*rawConn{a, b} {
		if got := r.do("AUTH", "acme", pass); got != "+OK" {
			t.Fatalf("admitted client: %q", got)
		}
	}
}

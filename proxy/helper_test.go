package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// testEnv is a metadb, one pair (master + replica) and a running proxy.
// There is no master process: the test plays its part through the store.
type testEnv struct {
	t       testing.TB
	ctx     context.Context
	meta    *redistest.Server
	master  *redistest.Server
	replica *redistest.Server
	store   *metadb.Store
	pair    *metadb.Pair
	p       *Proxy
	addr    string
	// cancel ends the proxy's context, as SIGTERM does; done is closed
	// when Serve has returned. stop is both, with Serve's error.
	cancel context.CancelFunc
	done   chan struct{}
	stop   func() error
	jobs   atomic.Int64
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.ID = "test-proxy"
	cfg.ConfirmTimeout = 300 * time.Millisecond
	cfg.BackendTimeout = 2 * time.Second
	cfg.DialTimeout = time.Second
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.LeaseTTL = 2 * time.Second
	cfg.LeaseMargin = 500 * time.Millisecond
	cfg.DrainTimeout = 2 * time.Second
	return cfg
}

func newEnv(t testing.TB, mod ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, ctx: t.Context()}
	e.meta = redistest.Start(t)
	// StartPair returns once the master streams to the replica (WAIT 1
	// is answered), so the first confirmed write does not time out.
	e.master, e.replica = redistest.StartPair(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + e.meta.Addr + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	e.store = store
	e.pair, err = store.AddPair(e.ctx, "64M", e.master.Addr, e.replica.Addr, []int{0, 1, 2, 3, 4, 5, 6, 7})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	for _, m := range mod {
		m(&cfg)
	}
	e.start(cfg)
	return e
}

// start runs a proxy with cfg and stops it at cleanup.
func (e *testEnv) start(cfg Config) {
	t := e.t
	log := zerolog.Nop()
	if os.Getenv("PROXY_TEST_LOG") != "" {
		log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	p, err := New(cfg, e.store, log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = p.Serve(ctx, ln)
	}()
	<-p.Ready()
	if p.readyErr != nil {
		t.Fatal(p.readyErr)
	}
	e.p, e.addr = p, p.Addr()
	e.cancel, e.done = cancel, done
	e.stop = func() error {
		cancel()
		select {
		case <-done:
			return runErr
		case <-time.After(15 * time.Second):
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			return fmt.Errorf("proxy did not stop:\n%s", buf[:n])
		}
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("proxy run: %v", err)
		}
	})
	// The lease must be up before writes are accepted.
	e.waitFor("lease", func() bool { return time.Now().UnixNano() < p.fenceAt.Load() })
}

// waitFor is redistest.WaitFor with the proxy tests' 10s deadline.
func (e *testEnv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	redistest.WaitFor(e.t, 10*time.Second, what, cond)
}

// tenant creates a tenant and returns its password.
func (e *testEnv) tenant(name string) string {
	e.t.Helper()
	pass := "pw-" + name + "-0123456789abcdef"
	if _, err := e.store.CreateTenant(e.ctx, "test", name, "tok-"+name, pass); err != nil {
		e.t.Fatal(err)
	}
	e.waitFor("tenant "+name, func() bool { return e.p.snap.Load().tenants[name] != nil })
	return pass
}

// db creates an active db for tenant and waits until the proxy routes it.
func (e *testEnv) db(tenant, mode string) *metadb.DB {
	e.t.Helper()
	job := fmt.Sprintf("job-%d", e.jobs.Add(1))
	db, _, err := e.store.ClaimDB(e.ctx, tenant, e.pair, mode, 64<<20, 64, job)
	if err != nil {
		e.t.Fatal(err)
	}
	db, err = e.store.UpdateDB(e.ctx, nil, "test", tenant, db.Index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		db.State = metadb.DBActive
		return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(db, e.pair)}}}}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitRoute(tenant, db.Index, func(d *dbRoute) bool { return d != nil })
	e.waitFor("command table", func() bool { return e.p.table.Load() != nil })
	return db
}

// waitRoute waits until the proxy's route for the db satisfies cond.
func (e *testEnv) waitRoute(tenant string, index int, cond func(*dbRoute) bool) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("route %s/%d", tenant, index), func() bool {
		return cond(e.p.snap.Load().dbs[dbKey{tenant, uint32(index)}])
	})
}

// ban sets or lifts a quota ban as the master would.
func (e *testEnv) ban(tenant string, index int, on bool) {
	e.t.Helper()
	_, err := e.store.UpdateDB(e.ctx, nil, "test", tenant, index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		db.Banned = on
		return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{Tenant: tenant, Index: uint32(index), Banned: on}}}}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitRoute(tenant, index, func(d *dbRoute) bool { return d != nil && d.banned == on })
}

// queued is how many bytes nc has sent that its peer has not yet got
// (TIOCOUTQ), or -1 when it cannot tell.
func queued(nc net.Conn) int {
	return sockQueue(nc, syscall.TIOCOUTQ)
}

// tenantInput is how many bytes the kernel holds unread for the proxy's
// tenant connections (TIOCINQ), summed.
func (e *testEnv) tenantInput() int {
	e.p.clientsMu.Lock()
	defer e.p.clientsMu.Unlock()
	sum := 0
	for c := range e.p.clients {
		if n := sockQueue(c.nc, syscall.TIOCINQ); n > 0 {
			sum += n
		}
	}
	return sum
}

func sockQueue(nc net.Conn, req uintptr) int {
	rc := rawConnOf(nc)
	if rc == nil {
		return -1
	}
	n := -1
	_ = rc.Control(func(fd uintptr) {
		var v int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&v))); e == 0 {
			n = int(v)
		}
	})
	return n
}

// pause stops s (SIGSTOP) until the returned resume is called, or until
// the test ends. It returns once s is stopped: the signal is delivered
// asynchronously, and a test may count on s doing nothing more.
func pause(t *testing.T, s *redistest.Server) (resume func()) {
	t.Helper()
	if err := s.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("/proc/%d/stat", s.Pid())
	redistest.WaitFor(t, 10*time.Second, fmt.Sprintf("redis-server %d stopped", s.Pid()), func() bool {
		// The state is the field after the command name, which is in
		// parentheses: "pid (redis-server) T …".
		b, err := os.ReadFile(stat)
		i := strings.LastIndexByte(string(b), ')')
		return err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'T'
	})
	stopped := true
	resume = func() {
		if stopped {
			stopped = false
			if err := s.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(resume)
	return resume
}

// hold sets or releases a write hold and returns the version it got.
func (e *testEnv) hold(tenant string, index int, on bool, deadline time.Time) uint64 {
	e.t.Helper()
	v, err := e.store.Announce(e.ctx, nil, "test", &buspb.Envelope{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{
		Tenant: tenant, Index: uint32(index), Hold: on, Job: "resize-1", DeadlineUnixNanos: deadline.UnixNano()}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitRoute(tenant, index, func(d *dbRoute) bool { return d != nil && (d.hold != nil) == on })
	return v
}

// client is a go-redis client from a redis:// URL, as tenants get it.
func (e *testEnv) client(user, pass string, index int) *redis.Client {
	e.t.Helper()
	opt, err := redis.ParseURL(fmt.Sprintf("redis://%s:%s@%s/%d", user, pass, e.addr, index))
	if err != nil {
		e.t.Fatal(err)
	}
	c := redis.NewClient(opt)
	e.t.Cleanup(func() { c.Close() })
	return c
}

// slot is a direct client on the master's db that serves a tenant db.
func (e *testEnv) slot(db *metadb.DB) *redis.Client {
	return e.master.ClientDB(e.t, db.SlotDB)
}

// rawConn is a bare TCP connection to the proxy for protocol-level tests.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func (e *testEnv) raw() *rawConn {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	return &rawConn{t: e.t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if _, err := r.nc.Write([]byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// do sends a command and returns its reply decoded loosely as text.
func (r *rawConn) do(args ...string) string {
	r.t.Helper()
	r.send(string(appendCommandStr(nil, args...)))
	return r.reply()
}

// reply reads one reply: "+OK", "-ERR …", ":1", "$value" / "$nil", or an
// array as "[a b c]".
func (r *rawConn) reply() string {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := readText(r.br)
	if err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	return s
}

func readText(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty line")
	}
	switch line[0] {
	case '+', '-', ':':
		return line, nil
	case '$':
		var n int
		fmt.Sscanf(line[1:], "%d", &n)
		if n < 0 {
			return "$nil", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return "$" + string(buf[:n]), nil
	case '*':
		var n int
		fmt.Sscanf(line[1:], "%d", &n)
		if n < 0 {
			return "*nil", nil
		}
		parts := make([]string, n)
		for i := range parts {
			s, err := readText(br)
			if err != nil {
				return "", err
			}
			parts[i] = strings.TrimPrefix(s, "$")
		}
		return "[" + strings.Join(parts, " ") + "]", nil
	}
	return "", fmt.Errorf("bad reply line %q", line)
}

// closed reports whether the proxy closed the connection (EOF within 2s).
func (r *rawConn) closed() bool {
	_ = r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	for {
		_, err := r.br.Read(buf)
		if err != nil {
			return err == io.EOF || strings.Contains(err.Error(), "reset")
		}
	}
}

// waitBlocked waits until n clients of the backend master are blocked (in
// BLPOP and the like), so a test pushes only once the pop is waiting.
func (e *testEnv) waitBlocked(n int) {
	want := "blocked_clients:" + strconv.Itoa(n) + "\r\n"
	mc := e.master.Client(e.t)
	e.waitFor(want, func() bool {
		info, err := mc.Info(e.ctx, "clients").Result()
		return err == nil && strings.Contains(info, want)
	})
}

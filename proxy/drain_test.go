package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// A command is accepted when the proxy has read it from its tenant
// connection before the drain began (before Serve's context ended). The
// drain must answer every accepted command as if nothing happened, and
// must neither answer nor execute any other: once the drain has begun the
// proxy reads nothing more, and closes each connection when the commands
// it had read are answered.
//
// The writers below make "sent before the drain" and "accepted" the same
// thing: each has exactly one command outstanding at a time, and the tests
// end the proxy's context only once the proxy counts every writer's
// command (held by a resize hold, or in flight awaiting the replica), so
// the command each writer sent last before the cancel is accepted, and the
// next one it sends, once that is answered, is sent after the drain began.

// drainWriter is one tenant connection that sends SET <name>:<seq> <seq>
// for seq = 1, 2, … one at a time, until the connection ends or a reply
// is not +OK.
type drainWriter struct {
	name   string
	nc     net.Conn
	br     *bufio.Reader
	gateAt int64           // when > 0, command gateAt waits for gate
	gate   <-chan struct{} // to be sent
	sent   atomic.Int64    // seq of the command last written to the socket
	nOK    atomic.Int64
	done   chan struct{}

	// Set by run, read after done.
	oks     []int64 // seqs answered +OK, in order
	bad     string  // a reply other than +OK
	badSeq  int64
	lost    int64 // the seq whose reply never came: the connection ended
	lostErr error
}

// writer connects as tenant to db index and starts writing; with gateAt
// > 0 it sends command gateAt only once gate is closed.
func (e *testEnv) writer(name, tenant, pass string, index int, gateAt int64, gate <-chan struct{}) *drainWriter {
	e.t.Helper()
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { nc.Close() })
	w := &drainWriter{name: name, nc: nc, br: bufio.NewReader(nc), gateAt: gateAt, gate: gate, done: make(chan struct{})}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(append(appendCommandStr(nil, "AUTH", tenant, pass), appendCommandStr(nil, "SELECT", strconv.Itoa(index))...)); err != nil {
		e.t.Fatal(err)
	}
	for _, what := range []string{"AUTH", "SELECT"} {
		if got, err := readText(w.br); err != nil || got != "+OK" {
			e.t.Fatalf("%s %s: %q, %v", name, what, got, err)
		}
	}
	// A bound for a test that goes wrong; the tests end every writer
	// long before.
	_ = nc.SetDeadline(time.Now().Add(time.Minute))
	go w.run()
	return w
}

func (w *drainWriter) key(seq int64) string { return w.name + ":" + strconv.FormatInt(seq, 10) }

func (w *drainWriter) run() {
	defer close(w.done)
	for seq := int64(1); ; seq++ {
		if seq == w.gateAt {
			<-w.gate
		}
		w.sent.Store(seq)
		if _, err := w.nc.Write(appendCommandStr(nil, "SET", w.key(seq), strconv.FormatInt(seq, 10))); err != nil {
			w.lost, w.lostErr = seq, err
			return
		}
		got, err := readText(w.br)
		if err != nil {
			w.lost, w.lostErr = seq, err
			return
		}
		if got != "+OK" {
			w.bad, w.badSeq = got, seq
			return
		}
		w.oks = append(w.oks, seq)
		w.nOK.Add(1)
	}
}

// waitDone waits for every writer to end.
func waitWriters(t *testing.T, ws []*drainWriter) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for _, w := range ws {
		select {
		case <-w.done:
		case <-deadline:
			t.Fatalf("writer %s still running (sent %d)", w.name, w.sent.Load())
		}
	}
}

// waitServe waits for Serve to return and fails the test on its error.
func (e *testEnv) waitServe(within time.Duration) {
	e.t.Helper()
	select {
	case <-e.done:
	case <-time.After(within):
		e.t.Fatalf("Serve did not return within %v of the end of the drain", within)
	}
	if err := e.stop(); err != nil {
		e.t.Fatalf("Serve: %v", err)
	}
}

// values reads keys from c in one round trip; a missing key reads "".
func values(t *testing.T, c *redis.Client, keys []string) []string {
	t.Helper()
	vals, err := c.MGet(context.Background(), keys...).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(vals))
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i] = s
		}
	}
	return out
}

// TestLameduckDrain: when the proxy's context ends (SIGTERM), it stops
// accepting connections but answers every accepted command: writes queued
// behind a resize hold are released by the cut-over that the bus still
// delivers, and go to the new slot; confirmed writes in flight get their
// replica's acknowledgement; the lease is renewed meanwhile, so none is
// refused as fenced. Serve returns once they are answered.
func TestLameduckDrain(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.ConfirmTimeout = 20 * time.Second // the replica is stopped for a while
		c.DrainTimeout = 30 * time.Second
	})
	ctx := e.ctx
	pass := e.tenant("acme")
	heldDB := e.db("acme", metadb.WriteConfirmed)  // cut over behind a hold during the drain
	ackedDB := e.db("acme", metadb.WriteConfirmed) // its writes await the stopped replica
	const n = 6
	// The writers of ackedDB send command gateAt only once the replica is
	// stopped, so that nothing can confirm it until the replica resumes
	// (a command sent earlier could be, by an acknowledgement already on
	// its way).
	const gateAt = 4
	gate := make(chan struct{})
	var held, acked, all []*drainWriter
	for i := 0; i < n; i++ {
		held = append(held, e.writer(fmt.Sprintf("h%d", i), "acme", pass, heldDB.Index, 0, nil))
		acked = append(acked, e.writer(fmt.Sprintf("a%d", i), "acme", pass, ackedDB.Index, gateAt, gate))
	}
	all = append(append(all, held...), acked...)
	e.waitFor("confirmed writes answered", func() bool {
		for _, w := range held {
			if w.nOK.Load() < 3 {
				return false
			}
		}
		for _, w := range acked {
			if w.nOK.Load() < gateAt-1 {
				return false
			}
		}
		return true
	})

	// The hold, as a resize's cut-over starts it, and its acknowledgement.
	v := e.hold("acme", heldDB.Index, true, time.Now().Add(time.Minute))
	hst := e.p.dbState(dbKey{"acme", uint32(heldDB.Index)})
	e.waitFor("every writer of the held db queued", func() bool { return hst.held.Load() == n })
	e.waitFor("hold acknowledged", func() bool {
		ms, err := e.store.Members(ctx, metadb.KindProxy, time.Minute)
		return err == nil && len(ms) == 1 && ms[0].AppliedVersion >= v
	})
	// The replica stops acknowledging: the other db's writes wait in WAIT.
	resume := pause(t, e.replica)
	close(gate)
	ast := e.p.dbState(dbKey{"acme", uint32(ackedDB.Index)})
	e.waitFor("every writer of the other db awaiting the replica", func() bool {
		for _, w := range acked {
			if w.sent.Load() != gateAt {
				return false
			}
		}
		return ast.inflight.Load() == n
	})

	accepted := map[*drainWriter]int64{}
	for _, w := range all {
		accepted[w] = w.sent.Load()
	}
	fence := e.p.fenceAt.Load()
	e.cancel()

	e.waitFor("drain begun", func() bool { return e.p.draining.Load() })
	if nc, err := net.DialTimeout("tcp", e.addr, time.Second); err == nil {
		nc.Close()
		t.Fatal("a connection was accepted after the drain began")
	}
	// The lease the proxy had when the drain began runs out; a renewed
	// one must be in force, or the writes still to come would be fenced.
	e.waitFor("the lease held at the cancel to run out", func() bool { return time.Now().UnixNano() > fence })
	e.waitFor("the lease renewed during the drain", func() bool { return e.p.fenceAt.Load() > time.Now().UnixNano() })
	e.waitFor("the lease saying the proxy drains, so the master places no db on it", func() bool {
		ms, err := e.store.LiveMembers(e.ctx, metadb.KindProxy)
		for _, m := range ms {
			if err == nil && m.ID == e.p.cfg.ID {
				return m.Draining
			}
		}
		return false
	})
	select {
	case <-e.done:
		t.Fatal("Serve returned with accepted writes unanswered")
	default:
	}

	resume()
	waitWriters(t, acked)

	// The cut-over, as the master makes it: a new slot, the hold's end.
	free, err := e.store.FreeSlots(ctx, e.pair.ID)
	if err != nil || len(free) == 0 {
		t.Fatalf("free slots: %v %v", free, err)
	}
	oldSlot := heldDB.SlotDB
	moved, err := e.store.UpdateDB(ctx, nil, "test", "acme", heldDB.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.SlotDB = free[0]
		return []*buspb.Envelope{
			{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(d, e.pair)}}},
			{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{Tenant: "acme", Index: uint32(d.Index), Hold: false, Job: "resize-1"}}},
		}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitWriters(t, held)
	e.waitServe(15 * time.Second)

	for _, w := range all {
		acc := accepted[w]
		if w.bad != "" {
			t.Errorf("%s: command %d answered %q, want +OK", w.name, w.badSeq, w.bad)
			continue
		}
		if len(w.oks) == 0 || w.oks[len(w.oks)-1] != acc || len(w.oks) != int(acc) {
			t.Errorf("%s: answered +OK %d commands, the last %v; want every one up to the accepted %d", w.name, len(w.oks), w.oks[max(len(w.oks)-1, 0):], acc)
		}
		if w.lost != acc+1 {
			t.Errorf("%s: the connection ended at command %d (%v), want at %d, the first sent after the drain began", w.name, w.lost, w.lostErr, acc+1)
		}
	}
	check := func(c *redis.Client, w *drainWriter, from, to int64, want bool) {
		t.Helper()
		var keys []string
		for seq := from; seq <= to; seq++ {
			keys = append(keys, w.key(seq))
		}
		for i, got := range values(t, c, keys) {
			if seq := from + int64(i); want && got != strconv.FormatInt(seq, 10) {
				t.Errorf("%s: %s = %q, want %d", w.name, keys[i], got, seq)
			} else if !want && got != "" {
				t.Errorf("%s: %s = %q, want none: written, but not answered OK", w.name, keys[i], got)
			}
		}
	}
	oldC, newC, ackedC := e.master.ClientDB(t, oldSlot), e.master.ClientDB(t, moved.SlotDB), e.slot(ackedDB)
	for _, w := range held {
		acc := accepted[w]
		check(oldC, w, 1, acc-1, true) // answered before the hold
		check(newC, w, acc, acc, true) // released by the cut-over
		check(oldC, w, acc, acc+1, false)
		check(newC, w, acc+1, acc+1, false)
	}
	for _, w := range acked {
		acc := accepted[w]
		check(ackedC, w, 1, acc, true)
		check(ackedC, w, acc+1, acc+1, false)
	}
	// Confirmed means the replica had them when they were answered.
	for _, w := range acked {
		check(e.replica.ClientDB(t, ackedDB.SlotDB), w, accepted[w], accepted[w], true)
	}
	for _, w := range held {
		check(e.replica.ClientDB(t, moved.SlotDB), w, accepted[w], accepted[w], true)
	}
	if ms, err := e.store.Members(ctx, metadb.KindProxy, time.Minute); err != nil || len(ms) != 0 {
		t.Fatalf("after the drain: members %v, %v; want the proxy deregistered", ms, err)
	}
}

// TestLameduckDrainTimeout: a hold that is never released does not keep a
// draining proxy: after DrainTimeout the held writes give up, unwritten,
// and Serve returns.
func TestLameduckDrainTimeout(t *testing.T) {
	const drain = time.Second
	e := newEnv(t, func(c *Config) { c.DrainTimeout = drain })
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	const n = 4
	var ws []*drainWriter
	for i := 0; i < n; i++ {
		ws = append(ws, e.writer(fmt.Sprintf("w%d", i), "acme", pass, db.Index, 0, nil))
	}
	e.waitFor("writes answered", func() bool {
		for _, w := range ws {
			if w.nOK.Load() < 1 {
				return false
			}
		}
		return true
	})
	e.hold("acme", db.Index, true, time.Now().Add(time.Minute))
	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	e.waitFor("every writer queued", func() bool { return st.held.Load() == n })
	accepted := map[*drainWriter]int64{}
	for _, w := range ws {
		accepted[w] = w.sent.Load()
	}
	start := time.Now()
	e.cancel()
	// The bound: the drain's timeout, then closing connections, stopping
	// the control loops and deregistering (at most 2s); the hold alone
	// would keep the writes a minute.
	e.waitServe(drain + 10*time.Second)
	if took := time.Since(start); took < drain {
		t.Errorf("Serve returned %v after the cancel, before the drain timeout %v", took, drain)
	} else if took > drain+5*time.Second {
		t.Errorf("Serve returned %v after the cancel, want about the drain timeout %v", took, drain)
	}
	waitWriters(t, ws)
	slot := e.slot(db)
	for _, w := range ws {
		acc := accepted[w]
		if len(w.oks) > 0 && w.oks[len(w.oks)-1] >= acc {
			t.Errorf("%s: held command %d answered +OK, but the hold never ended", w.name, acc)
		}
		// It gets an error, or the connection is closed before that.
		if end := max(w.badSeq, w.lost); end != acc {
			t.Errorf("%s: ended at command %d (%q, %v), want %d, the held one", w.name, end, w.bad, w.lostErr, acc)
		}
		if got := values(t, slot, []string{w.key(acc)})[0]; got != "" {
			t.Errorf("%s: the held write %s was written (%q) after its drain gave up", w.name, w.key(acc), got)
		}
	}
}

// TestRun: Run listens on the configured address, serves, and on the end of
// its context returns nil; an address in use is Run's error, and Ready
// closes all the same.
func TestRun(t *testing.T) {
	e := newEnv(t)
	cfg := testConfig()
	cfg.ID = "test-run"
	p, err := New(cfg, e.store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	if p.readyErr != nil {
		t.Fatal(p.readyErr)
	}
	nc, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(appendCommandStr(nil, "PING")); err != nil {
		t.Fatal(err)
	}
	if got, err := readText(bufio.NewReader(nc)); err != nil || got != "-NOAUTH Authentication required." {
		t.Fatalf("PING before AUTH: %q, %v", got, err)
	}
	nc.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}

	cfg = testConfig()
	cfg.Addr, cfg.ID = e.addr, "test-run-busy"
	busy, err := New(cfg, e.store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	err = busy.Run(context.Background())
	<-busy.Ready()
	var oe *net.OpError
	if !errors.As(err, &oe) || busy.readyErr == nil {
		t.Fatalf("Run on an address in use: %v (ready: %v), want the listen error", err, busy.readyErr)
	}
}

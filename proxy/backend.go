package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// request is one command in flight to a shared backend connection, or a
// WAIT marker the connection added after a batch of writes.
type request struct {
	raw   []byte // bytes to send
	reply []byte // raw reply, filled on completion
	w     *waiter

	write   bool   // counts in the connection's write sequence
	confirm bool   // answered only once a WAIT covering it returns >= 1
	seq     uint64 // write sequence number on its connection, set when sent
	conn    *bconn // the connection that sent it, set with seq

	direct *client    // its reply is written to this client by whoever completes it
	own    []byte     // a direct request's copy of its bytes
	st     *dbState   // a direct write's db: its in-flight count is released on completion
	lat    *histogram // a direct request of a sampled batch: its latency goes here
	t0     time.Time  // when that batch started

	marker bool // a WAIT added by the connection
	probe  bool // WAIT 0 0: learn what is replicated, confirm nothing
	sentAt time.Time
}

// waiter lets a client goroutine sleep until all its dispatched requests
// are complete: one wake-up per batch, not per request.
type waiter struct {
	n  atomic.Int32
	ch chan struct{}
}

func newWaiter() *waiter { return &waiter{ch: make(chan struct{}, 1)} }

func (w *waiter) add() { w.n.Add(1) }

func (w *waiter) done() {
	if w.n.Add(-1) == 0 {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

func (w *waiter) wait() {
	for w.n.Load() != 0 {
		<-w.ch
	}
}

func (r *request) complete(raw []byte) {
	if r.direct != nil {
		raw = r.direct.writeDirect(raw)
		if r.lat != nil {
			r.lat.observe(time.Since(r.t0), latencySample)
		}
		if r.st != nil {
			r.st.inflight.Add(-1)
		}
	}
	r.reply = append(r.reply[:0], raw...)
	r.w.done()
}

// group is one (server, db, ACL user): its shared pipelined connections and
// its idle dedicated connections. Groups live as long as the proxy and are
// shared by all route snapshots that name them.
type group struct {
	p    *Proxy
	addr string
	db   int
	user string

	// lastOK is when a shared connection of the group last read a reply
	// (unix nanos, from the coarse clock, so never later than the truth),
	// reported in the heartbeat for the keepers' failover decisions.
	lastOK atomic.Int64

	conns   []atomic.Pointer[bconn]
	retired atomic.Bool // no route names it any more; closed
	unused  time.Time   // since when no route names it (janitor only)
	mu      sync.Mutex
	down    atomic.Int64 // unix nanos: no new dial before (after a failed one)
	idle    []*dconn     // dedicated connections ready for reuse
}

type groupKey struct {
	addr string
	db   int
	user string
}

// group returns the group for (addr, db, user), creating it empty.
func (p *Proxy) group(addr string, db int, user string) *group {
	k := groupKey{addr, db, user}
	p.groupsMu.Lock()
	defer p.groupsMu.Unlock()
	g := p.groups[k]
	if g == nil {
		g = &group{p: p, addr: addr, db: db, user: user, conns: make([]atomic.Pointer[bconn], p.cfg.BackendConns)}
		p.groups[k] = g
	}
	return g
}

// conn returns the live shared connection i of the group, starting a new one
// when it is missing or broken. It returns nil while dials to the server are
// backing off after a failure.
func (g *group) conn(i int) *bconn {
	slot := &g.conns[i%len(g.conns)]
	if c := slot.Load(); c != nil && !c.dead.Load() {
		return c
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := slot.Load(); c != nil && !c.dead.Load() {
		return c
	}
	if time.Now().UnixNano() < g.down.Load() || g.p.closing.Load() || g.retired.Load() {
		return nil
	}
	c := newBconn(g)
	slot.Store(c)
	g.p.goBackend(c.run)
	return c
}

// retire closes the group's connections once no route uses it.
func (g *group) retire() {
	g.retired.Store(true)
	for i := range g.conns {
		if c := g.conns[i].Load(); c != nil {
			c.fail(fmt.Errorf("route moved away"))
		}
	}
	g.mu.Lock()
	for _, d := range g.idle {
		d.nc.Close()
	}
	g.idle = nil
	g.mu.Unlock()
}

// dialFailed backs dials off for a moment so a dead server is not hammered.
func (g *group) dialFailed() {
	g.down.Store(time.Now().Add(200 * time.Millisecond).UnixNano())
}

// isDown reports whether the last dial to the server failed moments ago.
func (g *group) isDown() bool { return g.down.Load() > coarseNow() }

// send dispatches r on shared connection i, retrying once on a connection
// that died meanwhile. On failure r is completed with an error reply.
func (g *group) send(i int, r *request) {
	for attempt := 0; attempt < 2; attempt++ {
		c := g.conn(i)
		if c == nil {
			break
		}
		if c.enqueue(r) {
			return
		}
	}
	r.complete(g.unavailable(nil))
}

func (g *group) unavailable(err error) []byte {
	msg := fmt.Sprintf("backend %s db %d unavailable", g.addr, g.db)
	if err != nil {
		msg += ": " + err.Error()
	}
	return appendError(nil, fmt.Errorf("%w: %s", ErrBackend, msg))
}

// bconn is one shared, pipelined backend connection. Clients enqueue
// requests; the writer goroutine sends everything queued in one write (a
// runtime.Gosched first lets more clients' commands join), followed, when
// the batch holds writes to confirm, by one "WAIT 1 <timeout>" that covers
// them all. The reader goroutine matches replies to requests in order and
// hands them back as raw bytes.
type bconn struct {
	g    *group
	kick chan struct{}
	quit chan struct{}
	dead atomic.Bool

	mu       sync.Mutex
	pending  []*request
	inflight []*request // sent, awaiting replies, in order
	head     int        // first live element of inflight
	kicked   bool
	failed   bool
	waitOut  bool // a confirming WAIT is in flight
	needWait bool // writes to confirm were sent behind it
	wantWait bool // the writer is to send a confirming WAIT

	nc       net.Conn
	rr       *replyReader
	ackedSeq atomic.Uint64 // writes up to this seq are known to be on the replica
	progress atomic.Int64  // coarse time of the last reply or of the first send after idle
	busy     atomic.Int32  // requests in flight (watchdog)

	// writer-only state
	so        *sockOut
	writeSeq  uint64
	wbuf      []byte
	spare     []*request
	probing   bool
	lastProbe int64 // coarse unix nanos
	waitCmd   []byte
	markers   []*request

	// reader-only state
	awaiting []*request
}

func newBconn(g *group) *bconn {
	ms := strconv.FormatInt(g.p.cfg.ConfirmTimeout.Milliseconds(), 10)
	return &bconn{g: g, kick: make(chan struct{}, 1), quit: make(chan struct{}),
		waitCmd: appendCommandStr(nil, "WAIT", "1", ms)}
}

var probeCmd = appendCommandStr(nil, "WAIT", "0", "0")

// enqueue adds r to the next batch. It returns false if the connection died.
func (c *bconn) enqueue(r *request) bool {
	c.mu.Lock()
	if c.failed {
		c.mu.Unlock()
		return false
	}
	c.pending = append(c.pending, r)
	c.kickLocked()
	c.mu.Unlock()
	return true
}

// kickLocked wakes the writer unless a wake is already owed. The channel
// holds one, and kicked stays set until the writer has taken its batch, so
// the send never blocks. Called with c.mu held.
func (c *bconn) kickLocked() {
	if !c.kicked {
		c.kicked = true
		c.kick <- struct{}{}
	}
}

// run dials, then writes batches until the connection fails or the proxy
// closes its backends.
func (c *bconn) run() {
	p := c.g.p
	defer func() {
		if r := recover(); r != nil {
			p.log.Error().Interface("panic", r).Str("backend", c.g.addr).Msg("backend connection panicked; closed")
			p.metrics.panics.Inc()
			c.fail(fmt.Errorf("internal error"))
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout+p.cfg.BackendTimeout)
	h, err := p.dialBackend(ctx, c.g.addr, c.g.db, c.g.user)
	cancel()
	if err != nil {
		c.g.dialFailed()
		p.metrics.backendErrors.WithLabelValues(c.g.addr, "dial").Inc()
		c.fail(err)
		return
	}
	c.mu.Lock()
	c.nc, c.rr = h.nc, h.rr
	if c.failed { // closed while dialing
		c.mu.Unlock()
		h.nc.Close()
		return
	}
	c.mu.Unlock()
	c.rr.in.useRaw()
	c.so = newSockOut(h.nc)
	p.registerConn(c)
	defer p.unregisterConn(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if r := recover(); r != nil {
				p.log.Error().Interface("panic", r).Str("backend", c.g.addr).Msg("backend reader panicked; closed")
				p.metrics.panics.Inc()
				c.fail(fmt.Errorf("internal error"))
			}
		}()
		c.readLoop()
	}()
	c.writeLoop()
	<-done
}

// writeLoop sends what clients queued, one batch per wake-up, until the
// connection fails.
func (c *bconn) writeLoop() {
	for {
		select {
		case <-c.kick:
		case <-c.quit:
			return
		}
		// Let other clients' goroutines run and add their commands to this
		// batch before it is written: one syscall for many clients. (A
		// second yield, or yielding while the batch grew, measured no
		// better at pipeline 1 with 50 clients.)
		runtime.Gosched()
		batch, ok := c.take()
		if !ok {
			return
		}
		var err error
		if len(c.wbuf) > 0 {
			err = c.so.write(c.wbuf)
		}
		if cap(c.wbuf) > 1<<20 {
			c.wbuf = nil
		} else {
			c.wbuf = c.wbuf[:0]
		}
		clear(batch)
		c.spare = batch[:0]
		if err != nil {
			c.g.p.metrics.backendErrors.WithLabelValues(c.g.addr, "write").Inc()
			c.fail(err)
			return
		}
	}
}

// take moves the pending requests in flight as one batch: it numbers its
// writes, adds the marker chooseMarker picks, and copies their bytes into
// wbuf. It returns the batch, or false if the connection failed.
func (c *bconn) take() ([]*request, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed {
		return nil, false
	}
	batch := c.pending
	c.pending = c.spare[:0]
	c.kicked = false
	wasIdle := c.head == len(c.inflight)
	confirm, writes := false, false
	for _, r := range batch {
		if r.write {
			c.writeSeq++
			r.seq, r.conn = c.writeSeq, c
			writes = true
			confirm = confirm || r.confirm
		}
	}
	c.inflight = append(c.inflight, batch...)
	now := coarseNow()
	m := c.addMarker(chooseMarker(markerState{
		confirm: confirm, writes: writes,
		wantWait: c.wantWait, waitOut: c.waitOut, probing: c.probing,
		writeSeq: c.writeSeq, ackedSeq: c.ackedSeq.Load(),
		now: now, lastProbe: c.lastProbe,
	}), now)
	n := len(batch)
	if m != nil {
		c.inflight = append(c.inflight, m)
		n++
	}
	c.busy.Add(int32(n))
	if wasIdle {
		c.progress.Store(now)
	}
	// Copied under the lock: once unlocked, a failure may complete these
	// requests, and their clients reuse the bytes.
	for _, r := range batch {
		c.wbuf = append(c.wbuf, r.raw...)
	}
	if m != nil {
		if m.probe {
			c.wbuf = append(c.wbuf, probeCmd...)
		} else {
			c.wbuf = append(c.wbuf, c.waitCmd...)
		}
	}
	return batch, true
}

// addMarker carries out the marker choice k for the batch just numbered: it
// returns the marker to send after it, or nil. Called with c.mu held.
func (c *bconn) addMarker(k markerKind, now int64) *request {
	switch k {
	case markDefer:
		c.needWait = true
	case markWait:
		m := c.marker()
		m.seq, m.sentAt = c.writeSeq, time.Now()
		c.waitOut, c.wantWait = true, false
		return m
	case markProbe:
		m := c.marker()
		m.seq, m.probe = c.writeSeq, true
		c.probing, c.lastProbe = true, now
		return m
	}
	return nil
}

// probeInterval spaces the WAIT 0 0 probes that tell async connections what
// the replica has, for read-your-writes.
const probeInterval = 20 * time.Millisecond

func (c *bconn) marker() *request {
	if n := len(c.markers); n > 0 {
		m := c.markers[n-1]
		c.markers = c.markers[:n-1]
		return m
	}
	return &request{marker: true}
}

// readLoop hands replies back until the connection fails. It reads the
// socket in raw mode (see sockIn).
func (c *bconn) readLoop() {
	var rerr error
	err := c.rr.in.run(func() bool {
		for {
			raw, err := c.rr.next()
			if err == errWouldBlock {
				return false
			}
			if err != nil {
				rerr = err
				return true
			}
			if !c.deliver(raw) {
				rerr = errNoRequest
				return true
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if !c.dead.Load() {
		c.g.p.metrics.backendErrors.WithLabelValues(c.g.addr, "read").Inc()
	}
	c.fail(err)
	// Writes held for a confirmation that will never come: their outcome
	// is unknown, so they get an error, never OK.
	errReply := c.g.unavailable(err)
	for _, r := range c.awaiting {
		r.reply = append(r.reply[:0], errReply...)
		r.w.done()
	}
	c.awaiting = nil
}

var errNoRequest = errors.New("reply without request")

// deliver matches one reply to the oldest request in flight. It returns
// false when the reply matches nothing.
func (c *bconn) deliver(raw []byte) bool {
	if !c.rr.buffered() {
		c.g.lastOK.Store(coarseNow()) // once per read, not per reply
	}
	c.mu.Lock()
	if c.head == len(c.inflight) {
		c.mu.Unlock()
		return false
	}
	r := c.inflight[c.head]
	c.inflight[c.head] = nil
	c.head++
	if c.head == len(c.inflight) {
		c.head, c.inflight = 0, c.inflight[:0]
	}
	c.mu.Unlock()
	c.busy.Add(-1)
	c.progress.Store(coarseNow())
	switch {
	case r.marker:
		c.settle(r, raw)
	case r.confirm && !isErrorReply(raw):
		r.reply = append(r.reply[:0], raw...)
		c.awaiting = append(c.awaiting, r)
	default:
		r.complete(raw)
	}
	return true
}

// settle handles a WAIT reply: writes it covers are confirmed when at least
// one replica acknowledged them, and fail otherwise.
func (c *bconn) settle(m *request, raw []byte) {
	n, ok := replyInt(raw)
	if ok && n >= 1 {
		for {
			cur := c.ackedSeq.Load()
			if m.seq <= cur || c.ackedSeq.CompareAndSwap(cur, m.seq) {
				break
			}
		}
	}
	if !m.probe {
		c.g.p.metrics.confirmLag.Observe(time.Since(m.sentAt).Seconds())
		var errReply []byte
		if !ok || n < 1 {
			c.g.p.metrics.unconfirmed.Add(float64(len(c.awaiting)))
			errReply = appendError(nil, fmt.Errorf("%w (%s)", ErrNotConfirmed, c.g.p.cfg.ConfirmTimeout))
		}
		for _, r := range c.awaiting {
			if errReply != nil {
				r.reply = append(r.reply[:0], errReply...)
			}
			r.w.done()
		}
		clear(c.awaiting)
		c.awaiting = c.awaiting[:0]
	}
	c.mu.Lock()
	if m.probe {
		c.probing = false
	} else {
		c.waitOut = false
		if c.needWait && !c.failed {
			// Writes sent behind this WAIT: confirm them with the next.
			c.needWait, c.wantWait = false, true
			c.kickLocked()
		}
	}
	m.probe, m.seq = false, 0
	c.markers = append(c.markers, m)
	c.mu.Unlock()
}

// fail marks the connection dead and completes every request it holds with
// an error: a write whose outcome is unknown is never answered OK.
func (c *bconn) fail(err error) {
	c.mu.Lock()
	if c.failed {
		c.mu.Unlock()
		return
	}
	c.failed = true
	c.dead.Store(true)
	reqs := append([]*request(nil), c.inflight[c.head:]...)
	reqs = append(reqs, c.pending...)
	c.inflight, c.pending, c.head = nil, nil, 0
	nc := c.nc
	c.mu.Unlock()
	close(c.quit)
	if nc != nil {
		nc.Close()
	}
	errReply := c.g.unavailable(err)
	for _, r := range reqs {
		if !r.marker {
			r.complete(errReply)
		}
	}
}

// stale reports whether the connection has had requests in flight without
// any reply for longer than limit (a stopped or unreachable server).
func (c *bconn) stale(now int64, limit time.Duration) bool {
	return c.busy.Load() > 0 && now-c.progress.Load() > int64(limit)
}

// stalledSince returns since when the connection has had requests in
// flight without any reply (coarse unix nanos), if that is at least limit.
func (c *bconn) stalledSince(now int64, limit time.Duration) (int64, bool) {
	since := c.progress.Load()
	return since, c.busy.Load() > 0 && !c.dead.Load() && now-since >= int64(limit)
}

// backendStalled is, per backend address, since when its longest-waiting
// shared connection has had requests in flight without any reply, for the
// addresses where that wait is at least the stall report time. A confirming
// WAIT counts too: a live master whose replica lags answers it within the
// confirm timeout, and the keeper asks the replica as well (failover.go).
func (p *Proxy) backendStalled(now int64) map[string]time.Time {
	var out map[string]time.Time
	p.connsMu.Lock()
	defer p.connsMu.Unlock()
	for c := range p.conns {
		since, ok := c.stalledSince(now, p.cfg.StallReport)
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]time.Time{}
		}
		if t := time.Unix(0, since); out[c.g.addr].IsZero() || t.Before(out[c.g.addr]) {
			out[c.g.addr] = t
		}
	}
	return out
}

// dropBackend fails every shared connection to addr: a failover moved its
// dbs away, and requests in flight to a hung old master would otherwise
// wait for the watchdog. Their outcome is unknown, so they get an error.
func (p *Proxy) dropBackend(addr string, why error) {
	var drop []*bconn
	p.connsMu.Lock()
	for c := range p.conns {
		if c.g.addr == addr {
			drop = append(drop, c)
		}
	}
	p.connsMu.Unlock()
	for _, c := range drop {
		c.fail(why)
	}
}

// backendOK is, per backend address, the last time any group got a reply
// from it.
func (p *Proxy) backendOK() map[string]time.Time {
	out := map[string]time.Time{}
	p.groupsMu.Lock()
	defer p.groupsMu.Unlock()
	for _, g := range p.groups {
		n := g.lastOK.Load()
		if n == 0 {
			continue
		}
		if t := time.Unix(0, n); t.After(out[g.addr]) {
			out[g.addr] = t
		}
	}
	return out
}

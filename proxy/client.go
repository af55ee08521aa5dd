package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client is one tenant connection. One goroutine serves it: it parses every
// complete request in its buffer (a pipeline), dispatches them all to the
// backends, waits once for all their replies, writes them in order, and only
// then reads again. Replies keep the requests' order because they are
// written from the batch's slots, whichever backend answers first.
type client struct {
	p   *Proxy
	id  uint64
	pin int // which shared backend connection this client uses
	nc  net.Conn
	rd  *reqReader
	in  *sockIn
	so  *sockOut
	lim *limits
	w   *waiter

	wmu sync.Mutex // guards writes to nc (the pub/sub pusher writes too)
	out []byte
	wdl int64 // current write deadline, unix nanos

	authed bool
	ts     *tenantState // the tenant the connection is counted against (admitTenant)
	tenant string
	index  uint32
	name   string
	lib    string

	// batch
	reqs      []*request // reply slots of this batch, in order
	pool      []*request
	snap      *snapshot
	db        *dbRoute // selected db in snap, resolved lazily
	dbOK      bool
	writing   []*dbState   // dbs whose in-flight count this batch holds
	bw        []batchWrite // last write of the batch per db (read-your-writes)
	lastGroup *group       // where the batch's last write went
	outBytes  int64
	start     time.Time // batch start when its latency is sampled, else zero
	now       int64     // real time of the batch, read lazily (clock)
	batches   uint64
	stats     batchStats

	ryw []rywMark

	// The last command looked up, by its name as sent, and the table it
	// came from: a pipeline mostly repeats one command.
	lastName  []byte
	lastSpec  *cmdSpec
	lastTable *cmdTable

	// pending is a direct request (see directOK) still owed to the
	// tenant, settled before anything else is written or read.
	pending *request

	tx     *txState
	ps     *psState
	quit   bool
	more   bool  // complete requests may remain buffered
	err    error // why step ended the connection
	lastIn int64 // coarse time of the last input, when idle timeout is on
	hot    hotSampler
	cmd    command // the request being handled (a field, so it does not escape)

	draining atomic.Bool
	blocked  atomic.Bool
}

// rywMark remembers a client's last write to a db until the replica is known
// to have it; until then the client's reads of that db go to the master.
type rywMark struct {
	st   *dbState
	conn *bconn // nil: untracked (see rememberUntracked and mustReadMaster)
	seq  uint64
}

type batchStats struct {
	st    *dbState
	ops   [numClasses]uint32
	reads uint32
	write uint32
}

// readChunk is the least free space a read asks for; the buffer starts at
// 4 KB and grows only when a pipeline or a value needs it.
const readChunk = 512

func (p *Proxy) newClient(nc net.Conn) *client {
	id := p.nextID.Add(1)
	return &client{p: p, id: id, pin: int(id), nc: nc, rd: newReqReader(4 << 10), in: newSockIn(nc), so: newSockOut(nc), lim: &p.unauthLimits, w: newWaiter(),
		hot: newHotSampler(id, p.cfg.HotKeySample)}
}

// serve runs the connection until the tenant leaves, a protocol error, or
// the proxy drains. A panic is contained to this connection.
func (c *client) serve() {
	defer func() {
		if r := recover(); r != nil {
			c.p.log.Error().Interface("panic", r).Uint64("client", c.id).Msg("client connection panicked; closed")
			c.p.metrics.panics.Inc()
		}
		c.cleanup()
	}()
	c.in.useRaw()
	idle := c.p.cfg.IdleTimeout
	if idle > 0 {
		c.lastIn = coarseNow()
		_ = c.nc.SetReadDeadline(time.Unix(0, c.lastIn).Add(idle))
	}
	for {
		err := c.in.run(c.step)
		if err == nil {
			err = c.err
		}
		if c.pending != nil && !c.quit {
			// Woken to write the rest of a direct reply, or leaving (the
			// tenant half-closed, the proxy drains): the reply still owed
			// goes out first.
			c.settle()
			c.flushOut()
		}
		if c.quit || !errors.Is(err, os.ErrDeadlineExceeded) || c.draining.Load() {
			return
		}
		c.err = nil
		if idle == 0 {
			_ = c.nc.SetReadDeadline(time.Time{})
			continue
		}
		// The idle deadline is armed once and moved only when it fires, not
		// on every request: a pub/sub client is never idle, and one that
		// was active meanwhile gets the rest of its time.
		now := coarseNow()
		if c.ps == nil && now-c.lastIn >= int64(idle) {
			return
		}
		next := c.lastIn + int64(idle)
		if c.ps != nil {
			next = now + int64(idle)
		}
		_ = c.nc.SetReadDeadline(time.Unix(0, next))
	}
}

// step reads and serves requests until the socket has no more for now (it
// returns false: call again once readable) or the connection is over (true,
// the reason in c.err).
func (c *client) step() bool {
	for {
		if !c.more {
			if err := c.read(); err == errWouldBlock {
				return false
			} else if err != nil {
				c.err = err
				return true
			}
		}
		if c.pending != nil {
			c.settle()
		}
		c.more = c.batch()
		c.finish()
		if c.quit {
			return true
		}
		c.rd.argBuf = c.rd.argBuf[:0]
		if !c.more {
			c.rd.shrink(4 << 10)
		}
	}
}

// read takes in what the socket has.
func (c *client) read() error {
	if c.draining.Load() {
		return ErrShutdown
	}
	buf := c.rd.space(c.rd.readSize(readChunk))
	n, err := c.in.read(buf)
	c.rd.w += n
	if n > 0 {
		if c.p.cfg.IdleTimeout > 0 {
			c.lastIn = coarseNow()
		}
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// batch handles every complete request buffered, up to MaxBatch. It reports
// whether complete requests may remain.
func (c *client) batch() bool {
	// Latency is sampled on one batch in latencySample: reading the clock
	// twice per batch is a measurable share of a pipeline-1 request.
	c.batches++
	if c.batches%latencySample == 0 {
		c.start = time.Now()
	} else {
		c.start = time.Time{}
	}
	c.now = 0
	c.snap = c.p.snap.Load()
	c.dbOK = false
	for n := 0; n < c.p.cfg.MaxBatch; {
		var ok bool
		var err error
		c.cmd, ok, err = c.rd.next(c.lim)
		if err == errIncomplete {
			return false
		}
		if err != nil {
			c.replyErr(err)
			c.quit = true
			c.p.metrics.protoErrors.Inc()
			return false
		}
		if !ok {
			continue
		}
		n++
		c.handle(&c.cmd)
		if c.quit {
			return false
		}
	}
	return true
}

// handle dispatches one request.
func (c *client) handle(cmd *command) {
	if c.ps != nil {
		c.pubsubCommand(cmd)
		return
	}
	spec, err := c.lookup(cmd.args)
	if !c.authed && (err != nil || !noAuthCommand(spec.name)) {
		err = ErrNoAuth
	}
	if err == nil {
		err = spec.checkArity(len(cmd.args))
	}
	if err != nil {
		if c.tx != nil && c.tx.multi {
			c.tx.failed = true
		}
		c.replyErr(err)
		return
	}
	c.count(spec.class)
	if rated(spec) {
		if err := c.admitRate(); err != nil {
			if c.tx != nil && c.tx.multi {
				c.tx.failed = true
			}
			c.replyErr(err)
			return
		}
	}
	if c.tx != nil && c.tx.multi && !txControl(spec.name) {
		c.queue(spec, cmd)
		return
	}
	if c.tx != nil && c.tx.watch != nil && spec.kind == kForward && !spec.write {
		c.viaWatch(cmd)
		return
	}
	switch spec.kind {
	case kLocal:
		spec.local(c, cmd)
	case kForward:
		if spec.firstKey > 0 && c.hot.tick() {
			c.sampleKey(spec, cmd)
		}
		c.forward(spec, cmd)
	case kBlocking:
		if spec.firstKey > 0 && c.hot.tick() {
			c.sampleKey(spec, cmd)
		}
		if blocks(spec, cmd) {
			c.blockingCmd(spec, cmd)
		} else {
			c.forward(spec, cmd)
		}
	default:
		c.replyErr(refusal(spec))
	}
}

// lookup is Proxy.lookup with a one-entry cache of top-level commands.
func (c *client) lookup(args [][]byte) (*cmdSpec, error) {
	t := c.p.table.Load()
	if t != nil && t == c.lastTable && bytes.Equal(args[0], c.lastName) {
		return c.lastSpec, nil
	}
	spec, err := c.p.lookup(args)
	if err == nil && t != nil && !strings.Contains(spec.name, "|") { // not a subcommand
		c.lastTable, c.lastSpec = t, spec
		c.lastName = append(c.lastName[:0], args[0]...)
	}
	return spec, err
}

func noAuthCommand(name string) bool { return name == "auth" || name == "hello" || name == "quit" }

// route resolves the selected db in the batch's snapshot.
func (c *client) route() (*dbRoute, error) {
	if !c.dbOK {
		c.db = c.snap.dbs[dbKey{c.tenant, c.index}]
		c.dbOK = true
	}
	if c.db == nil {
		return nil, fmt.Errorf("db %d %w", c.index, ErrNoRoute)
	}
	return c.db, nil
}

// refresh reloads the snapshot (after counting a write in flight, or after
// waiting for a change).
func (c *client) refresh() {
	c.snap = c.p.snap.Load()
	c.dbOK = false
}

// forward sends a data command to the db's master or replica.
func (c *client) forward(spec *cmdSpec, cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	raw := cmd.raw
	if raw == nil {
		raw = appendCommand(nil, cmd.args...)
	}
	if spec.write {
		if db, err = c.admitWrite(db, spec.denyoom); err != nil {
			c.replyErr(err)
			return
		}
		c.sendWrite(db, db.master, raw)
		return
	}
	c.sendRead(db, raw)
}

// count tallies one command of class k for metrics.
func (c *client) count(k class) { c.stats.ops[k]++ }

func (c *client) statDB(st *dbState) {
	if c.stats.st != st {
		if c.stats.st != nil {
			c.flushStats()
		}
		c.stats.st = st
	}
}

// latencySample: one batch in this many has its latency measured; each
// measurement counts for that many batches in the histograms.
const latencySample = 8

// clock is the real time, read at most once per batch (self-fencing must
// not trust a coarse clock).
func (c *client) clock() int64 {
	if c.now == 0 {
		c.now = time.Now().UnixNano()
	}
	return c.now
}

// flushStats moves the batch's counters to the db's (shared) counters.
func (c *client) flushStats() {
	s := &c.stats
	st := s.st
	if st == nil {
		st = c.p.noDB
	}
	{
		if s.reads > 0 {
			st.reads.Add(uint64(s.reads))
		}
		if s.write > 0 {
			st.writes.Add(uint64(s.write))
		}
		var lat time.Duration
		if !c.start.IsZero() {
			lat = time.Since(c.start)
		}
		for k, n := range s.ops {
			if n > 0 {
				st.ops[k].Add(uint64(n))
				if !c.start.IsZero() {
					st.lat[k].observe(lat, uint64(n)*latencySample)
				}
			}
		}
	}
	*s = batchStats{}
}

// newReq takes a reply slot for the next request of the batch.
func (c *client) newReq() *request {
	var r *request
	if n := len(c.pool); n > 0 {
		r = c.pool[n-1]
		c.pool = c.pool[:n-1]
	} else {
		r = &request{w: c.w}
	}
	c.reqs = append(c.reqs, r)
	return r
}

// reply queues a reply the proxy makes itself.
func (c *client) reply(b []byte) {
	r := c.newReq()
	r.reply = append(r.reply[:0], b...)
}

func (c *client) replyErr(err error) {
	r := c.newReq()
	r.reply = appendError(r.reply[:0], err)
}

// finish waits for every reply of the batch, writes them in order, and
// releases the batch's in-flight counts and slots.
func (c *client) finish() {
	c.flush()
	c.flushOut()
	c.snap, c.db, c.dbOK = nil, nil, false
}

// flush is finish without ending the batch: used before a command that must
// see everything before it done (a hold, a blocking command, a WATCH).
func (c *client) flush() {
	if c.pending != nil {
		c.settle()
	}
	if len(c.reqs) == 0 && len(c.writing) == 0 {
		return
	}
	if len(c.reqs) == 1 && c.reqs[0].direct != nil {
		// A direct request, the batch's only one (directOK): its reply is
		// the backend reader's to write.
		c.flushStats()
		c.pending = c.reqs[0]
		c.reqs = c.reqs[:0]
		return
	}
	c.w.wait()
	for _, st := range c.writing {
		st.inflight.Add(-1)
	}
	c.writing = c.writing[:0]
	for _, w := range c.bw {
		if w.r.seq > 0 {
			c.remember(w.st, w.r.conn, w.r.seq)
		}
	}
	clear(c.bw)
	c.bw, c.lastGroup = c.bw[:0], nil
	c.flushStats()
	for _, r := range c.reqs {
		c.out = append(c.out, r.reply...)
		c.outBytes += int64(len(r.reply))
		if len(c.out) >= 64<<10 {
			c.flushOut()
		}
		c.recycle(r)
	}
	if c.outBytes > c.p.cfg.MaxOutput {
		c.p.log.Warn().Uint64("client", c.id).Int64("bytes", c.outBytes).Msg("client output limit reached; closed")
		c.quit = true
	}
	c.outBytes = 0
	clear(c.reqs)
	c.reqs = c.reqs[:0]
}

// sampleInto hands the latency sample of a batch that is one direct
// request to the request, before it is sent: the backend reader records it
// with the reply.
func (c *client) sampleInto(r *request) {
	st := c.stats.st
	if st == nil {
		st = c.p.noDB
	}
	for k, n := range c.stats.ops {
		if n > 0 {
			r.lat, r.t0 = &st.lat[k], c.start
			break
		}
	}
	c.start = time.Time{}
}

// recycle returns a reply slot to the pool; big buffers are let go.
func (c *client) recycle(r *request) {
	r.raw, r.write, r.confirm, r.seq, r.conn, r.direct, r.st, r.lat = nil, false, false, 0, nil, nil, nil, nil
	if cap(r.reply) > 64<<10 {
		r.reply = nil
	}
	if cap(r.own) > 64<<10 {
		r.own = nil
	}
	c.pool = append(c.pool, r)
}

// settle waits for the pending direct request; what of its reply the
// backend reader could not write goes out first, and a write leaves its
// read-your-writes mark.
func (c *client) settle() {
	r := c.pending
	c.pending = nil
	c.w.wait()
	if r.st != nil && r.seq > 0 {
		c.remember(r.st, r.conn, r.seq)
	}
	c.out = append(c.out, r.reply...)
	c.recycle(r)
}

// writeDirect writes a direct reply without blocking; it returns
// what it could not write (all of it when the connection is being written
// by someone else).
func (c *client) writeDirect(b []byte) []byte {
	if c.wmu.TryLock() {
		b = c.so.tryWrite(b)
		c.wmu.Unlock()
	}
	if len(b) > 0 {
		// Wake the connection's goroutine, waiting on its socket, to write
		// the rest (serve tells this wake from an idle timeout).
		_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	}
	return b
}

// flushOut writes the pending output.
func (c *client) flushOut() {
	if len(c.out) == 0 {
		return
	}
	if err := c.write(c.out); err != nil {
		c.quit = true
	}
	if cap(c.out) > 256<<10 {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
}

// write sends b to the tenant. It is the only writer of nc (the pub/sub
// pusher uses it too). The deadline rolls, renewed once half of it is
// spent: every write gets at least WriteTimeout/2, for an atomic load.
func (c *client) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if now := coarseNow(); now > c.wdl-int64(c.p.cfg.WriteTimeout/2) {
		c.wdl = now + int64(c.p.cfg.WriteTimeout)
		_ = c.nc.SetWriteDeadline(time.Unix(0, c.wdl))
	}
	return c.so.write(b)
}

// cleanup releases everything the connection holds.
func (c *client) cleanup() {
	c.w.wait()
	c.pending = nil
	for _, st := range c.writing {
		st.inflight.Add(-1)
	}
	c.writing = nil
	if c.tx != nil && c.tx.watch != nil {
		c.tx.watch.close()
	}
	if c.ps != nil {
		c.ps.stop()
	}
	c.nc.Close()
	c.releaseTenant()
	c.p.dropClient(c)
}

// drain asks the connection to finish the requests it has read (its
// batch, and complete requests still buffered) and close, reading nothing
// more from the socket.
func (c *client) drain() {
	c.draining.Store(true)
	_ = c.nc.SetReadDeadline(time.Now())
}

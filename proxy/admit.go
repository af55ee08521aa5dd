package proxy

import (
	"fmt"
	"time"
)

// The write path's rules: which connection a write and the reads after it
// take (read-your-writes), self-fencing, quota bans and resize holds.

// sendWrite dispatches a write (or script) to g, a group on db's master.
func (c *client) sendWrite(db *dbRoute, g *group, raw []byte) {
	if c.lastGroup != nil && c.lastGroup != g {
		// Writes of one batch that take different connections (a SET,
		// then an EVAL) must still execute in order.
		c.w.wait()
	}
	r := c.newReq()
	r.raw, r.write, r.confirm = raw, true, db.confirmed
	c.lastGroup = g
	c.noteWrite(db.st, g, r)
	c.statDB(db.st)
	c.stats.write++
	if !r.confirm && c.directOK() && len(c.writing) == 1 && c.writing[0] == db.st {
		// An async write alone in its batch: its reply is the backend
		// reader's to write, and so is the release of its in-flight
		// count, handed over here; its read-your-writes mark is made when
		// the client settles it, before its next request.
		c.makeDirect(r)
		r.st = db.st
		c.writing = c.writing[:0]
		clear(c.bw)
		c.bw, c.lastGroup = c.bw[:0], nil
	}
	c.w.add()
	g.send(c.pin, r)
}

// sendRead dispatches a read: to the replica unless the client has a write
// to this db that the replica may not have yet.
func (c *client) sendRead(db *dbRoute, raw []byte) {
	g := db.replica
	if wg := c.batchWrote(db.st); wg != nil {
		g = wg // same connection as this batch's write to the db: ordered
	} else if g == nil || c.mustReadMaster(db) || g.isDown() {
		g = db.master
	}
	r := c.newReq()
	r.raw = raw
	c.statDB(db.st)
	c.stats.reads++
	if c.directOK() {
		c.makeDirect(r)
	}
	c.w.add()
	g.send(c.pin, r)
}

// directOK reports whether the request just added is the batch's only one
// with nothing else buffered, no earlier output still to write (the rest of
// a previous direct reply must go first) and no transaction or WATCH open:
// then the backend reader writes its reply itself (and records its latency
// when the batch is sampled), and this goroutine goes back to reading
// instead of waiting to be woken for it.
func (c *client) directOK() bool {
	return len(c.reqs) == 1 && c.rd.r == c.rd.w && len(c.out) == 0 &&
		(c.tx == nil || (!c.tx.multi && c.tx.watch == nil)) && c.in.rc != nil
}

// makeDirect marks r as direct. Reading may reuse the input buffer before
// the backend writer copies the request out of it, so r gets its own copy.
func (c *client) makeDirect(r *request) {
	r.direct = c
	r.own = append(r.own[:0], r.raw...)
	r.raw = r.own
	if !c.start.IsZero() {
		c.sampleInto(r)
	}
}

// batchWrite is the last write of the current batch to one db.
type batchWrite struct {
	st *dbState
	g  *group
	r  *request
}

func (c *client) noteWrite(st *dbState, g *group, r *request) {
	for i := range c.bw {
		if c.bw[i].st == st {
			c.bw[i].g, c.bw[i].r = g, r
			return
		}
	}
	c.bw = append(c.bw, batchWrite{st, g, r})
}

// batchWrote is the connection this batch last wrote db on, or nil.
func (c *client) batchWrote(st *dbState) *group {
	for i := range c.bw {
		if c.bw[i].st == st {
			return c.bw[i].g
		}
	}
	return nil
}

// mustReadMaster reports whether an earlier batch's write to db may still be
// missing on the replica.
func (c *client) mustReadMaster(db *dbRoute) bool {
	for i := 0; i < len(c.ryw); i++ {
		m := c.ryw[i]
		if m.st != db.st {
			continue
		}
		if m.conn != nil && m.conn.ackedSeq.Load() >= m.seq {
			c.ryw[i] = c.ryw[len(c.ryw)-1]
			c.ryw = c.ryw[:len(c.ryw)-1]
			return false
		}
		if m.conn != nil && m.conn.dead.Load() && m.conn.ackedSeq.Load() < m.seq {
			// The connection died before the replica was known to have
			// the write, and nothing will tell now: the mark becomes
			// untracked (see rememberUntracked) and the dead connection
			// is let go. While the master is down these reads fail
			// rather than risk a stale answer from the replica.
			c.ryw[i].conn = nil
		}
		return true
	}
	return false
}

// admitWrite applies self-fencing, the quota ban and a resize hold to a
// write to db, and counts it as in flight. It may block on a hold; it
// returns the (possibly new) route to write to.
func (c *client) admitWrite(db *dbRoute, denyoom bool) (*dbRoute, error) {
	for {
		if c.clock() > c.p.fenceAt.Load() {
			return nil, ErrFenced
		}
		if db.readOnly != "" {
			return nil, fmt.Errorf("db %d is read-only while %s: %w", db.key.index, db.readOnly, ErrReadOnly)
		}
		if denyoom && db.banned {
			return nil, fmt.Errorf("db %d is over its %s quota: %w", db.key.index, db.route.Size, ErrOverQuota)
		}
		if db.confirmed && db.replica == nil {
			// Nothing could confirm it: refuse before writing anything.
			return nil, fmt.Errorf("db %d: %w", db.key.index, ErrNoReplica)
		}
		if !c.counted(db.st) {
			// Count first, then look at the newest snapshot: an
			// acknowledgement that swaps the snapshot and then waits for
			// the count cannot miss this write.
			db.st.inflight.Add(1)
			c.writing = append(c.writing, db.st)
			c.refresh()
			var err error
			if db, err = c.route(); err != nil {
				return nil, err
			}
			continue
		}
		if db.hold == nil {
			return db, nil
		}
		var err error
		if db, err = c.waitHold(db); err != nil {
			return nil, err
		}
	}
}

func (c *client) counted(st *dbState) bool {
	for _, s := range c.writing {
		if s == st {
			return true
		}
	}
	return false
}

// waitHold queues the client behind a resize hold: earlier replies are sent,
// the in-flight counts are released (the hold's acknowledgement waits for
// them), and the client sleeps until the snapshot changes or the deadline.
func (c *client) waitHold(db *dbRoute) (*dbRoute, error) {
	h := db.hold
	if time.Now().After(h.deadline) {
		return nil, fmt.Errorf("db %d: %w", db.key.index, ErrHoldTimeout)
	}
	if db.st.held.Load() >= int64(c.p.cfg.MaxHeld) {
		return nil, fmt.Errorf("db %d: %w", db.key.index, ErrHoldFull)
	}
	c.flush()
	c.flushOut()
	db.st.held.Add(1)
	c.p.metrics.held.Inc()
	defer func() { db.st.held.Add(-1); c.p.metrics.held.Dec() }()
	t := time.NewTimer(time.Until(h.deadline))
	defer t.Stop()
	select {
	case <-c.snap.next:
	case <-t.C:
		return nil, fmt.Errorf("db %d: %w", db.key.index, ErrHoldTimeout)
	case <-c.p.abandon:
		return nil, ErrShutdown
	}
	c.refresh()
	c.now = 0 // time passed: self-fencing must read the clock again
	return c.route()
}

// rememberUntracked records an async write made on a dedicated connection
// (a transaction, a blocking pop), where no sequence number tells when the
// replica has it: the client's reads of the db go to the master until a
// later write of its on a shared connection is acknowledged, which covers
// this one too (replication keeps order).
func (c *client) rememberUntracked(st *dbState) { c.remember(st, nil, 0) }

// remember records a write for read-your-writes: conn carried it as its
// write number seq.
func (c *client) remember(st *dbState, conn *bconn, seq uint64) {
	for i := range c.ryw {
		if c.ryw[i].st == st {
			c.ryw[i] = rywMark{st, conn, seq}
			return
		}
	}
	c.ryw = append(c.ryw, rywMark{st, conn, seq})
}

package proxy

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"
)

// blocks reports whether a command flagged blocking will really block:
// XREAD and XREADGROUP only do with a BLOCK option.
func blocks(spec *cmdSpec, cmd *command) bool {
	if spec.name != "xread" && spec.name != "xreadgroup" {
		return true
	}
	for _, a := range cmd.args[1:] {
		if strings.EqualFold(string(a), "block") {
			return true
		}
		if strings.EqualFold(string(a), "streams") {
			return false
		}
	}
	return false
}

// blockingCmd runs BLPOP and friends on a dedicated connection to the db's
// master, holding the client until the reply comes (as Redis does). While
// it waits, the proxy checks every second that the tenant is still
// connected, and a resize hold or route switch of the db unblocks it
// (CLIENT UNBLOCK: the tenant sees a timeout, never a lost element).
func (c *client) blockingCmd(spec *cmdSpec, cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	c.flush()
	if spec.write {
		// Counted as in flight until registered as a blocker, so an
		// acknowledgement sees one or the other.
		if db, err = c.admitWrite(db, spec.denyoom); err != nil {
			c.replyErr(err)
			return
		}
	}
	d, err := db.master.dedicated(context.Background())
	if err != nil {
		c.flush()
		c.replyErr(err)
		return
	}
	raw := cmd.raw
	if raw == nil {
		raw = appendCommand(nil, cmd.args...)
	}
	if spec.write {
		db.st.addBlocker(d)
		defer db.st.removeBlocker(d)
	}
	_ = d.nc.SetWriteDeadline(time.Now().Add(c.p.cfg.BackendTimeout))
	if _, err := d.nc.Write(raw); err != nil {
		d.close()
		c.flush()
		c.replyErr(fmt.Errorf("%w: %s: %v", ErrBackend, d.g.addr, err))
		return
	}
	c.flush() // releases the in-flight count: the blocker is registered
	c.flushOut()
	c.blocked.Store(true)
	unblocked := false
	reply, err := d.await(100*time.Millisecond, func() bool {
		if c.p.draining.Load() && !unblocked {
			// Draining: end the wait as a timeout, which every client
			// handles, rather than cut the connection.
			unblocked = true
			c.p.unblock(context.Background(), map[string][]int64{d.g.addr: {d.clientID}})
		}
		return !c.in.peerClosed()
	})
	c.blocked.Store(false)
	if err != nil {
		c.replyErr(err)
		return
	}
	if spec.write && db.confirmed && !isErrorReply(reply) && !isNullReply(reply) {
		rs, err := d.do(newBconnWait(c.p), 1, c.p.cfg.BackendTimeout+c.p.cfg.ConfirmTimeout)
		if err != nil {
			c.replyErr(err)
			return
		}
		if k, ok := replyInt(rs[0]); !ok || k < 1 {
			c.p.metrics.unconfirmed.Inc()
			d.release()
			c.replyErr(fmt.Errorf("%w (%s)", ErrNotConfirmed, c.p.cfg.ConfirmTimeout))
			return
		}
	}
	d.release()
	if spec.write && !db.confirmed && !isErrorReply(reply) && !isNullReply(reply) {
		c.rememberUntracked(db.st)
	}
	c.reply(reply)
}

func isNullReply(raw []byte) bool {
	return bytes.Equal(raw, []byte("$-1\r\n")) || bytes.Equal(raw, []byte("*-1\r\n"))
}

func (st *dbState) addBlocker(d *dconn) {
	st.mu.Lock()
	if st.blockers == nil {
		st.blockers = map[*dconn]struct{}{}
	}
	st.blockers[d] = struct{}{}
	st.mu.Unlock()
}

func (st *dbState) removeBlocker(d *dconn) {
	st.mu.Lock()
	delete(st.blockers, d)
	st.mu.Unlock()
}

// blockerIDs lists the backend client ids of blocked writes, by server.
func (st *dbState) blockerIDs() map[string][]int64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.blockers) == 0 {
		return nil
	}
	out := map[string][]int64{}
	for d := range st.blockers {
		out[d.g.addr] = append(out[d.g.addr], d.clientID)
	}
	return out
}

// cmdScript runs EVAL/EVALSHA (and _RO), SCRIPT LOAD/EXISTS on the db's
// master as the script user, whose ACL refuses select, flushall, move,
// swapdb, copy, publish and every admin command inside the script. A
// script may write: under a quota ban only the _RO forms run.
func (c *client) cmdScript(cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	name := strings.ToLower(string(cmd.args[0]))
	write := name == "eval" || name == "evalsha"
	raw := cmd.raw
	if raw == nil {
		raw = appendCommand(nil, cmd.args...)
	}
	if !write {
		c.sendOn(db, db.script, raw)
		return
	}
	if db, err = c.admitWrite(db, true); err != nil {
		c.replyErr(err)
		return
	}
	c.sendWrite(db, db.script, raw)
}

// sendOn sends a non-write command to g after this batch's writes to other
// connections.
func (c *client) sendOn(db *dbRoute, g *group, raw []byte) {
	if c.lastGroup != nil && c.lastGroup != g {
		c.w.wait()
	}
	r := c.newReq()
	r.raw = raw
	c.statDB(db.st)
	c.stats.reads++
	c.w.add()
	g.send(c.pin, r)
}

package proxy

import (
	"context"
	"fmt"
	"strings"
)

// Transactions. Commands between MULTI and EXEC are checked and queued in
// the proxy (+QUEUED), and EXEC sends MULTI … EXEC in one go on a dedicated
// connection to the db's master, authenticated as the script user: nothing
// reaches a backend if EXEC never comes, and a resize hold or route switch
// that happens meanwhile is simply seen at EXEC. WATCH takes the dedicated
// connection at once (the watch must live on the connection that runs
// EXEC); until EXEC, DISCARD or UNWATCH the client's reads go through it, so
// what it reads is the master's current data. If the db's route changed
// since WATCH, EXEC aborts (null reply), as if a watched key had changed.
type txState struct {
	multi   bool
	failed  bool
	queued  []byte
	n       int
	write   bool
	denyoom bool

	watch   *dconn
	watchDB *dbRoute
}

// txControl are the commands that act immediately inside MULTI.
func txControl(name string) bool {
	switch name {
	case "exec", "discard", "multi", "watch", "quit", "reset":
		return true
	}
	return false
}

// queue checks one command inside MULTI and queues it.
func (c *client) queue(spec *cmdSpec, cmd *command) {
	tx := c.tx
	fail := func(err error) {
		tx.failed = true
		c.replyErr(err)
	}
	switch {
	case spec.kind == kRefuse:
		fail(refusal(spec))
		return
	case spec.kind == kLocal && spec.name != "ping" && spec.name != "echo" && spec.name != "unwatch" && spec.name != "copy":
		fail(fmt.Errorf("%w: '%s' inside MULTI is not supported by this proxy", ErrBusyTx, spec.name))
		return
	case spec.name == "copy":
		for _, a := range cmd.args[3:] {
			if strings.EqualFold(string(a), "db") {
				fail(fmt.Errorf("%w: 'copy' with DB", ErrNoPerm))
				return
			}
		}
	}
	if spec.denyoom {
		if db, err := c.route(); err == nil && db.banned {
			fail(fmt.Errorf("db %d is over its %s quota: %w", db.key.index, db.route.Size, ErrOverQuota))
			return
		}
	}
	if cmd.raw != nil {
		tx.queued = append(tx.queued, cmd.raw...)
	} else {
		tx.queued = appendCommand(tx.queued, cmd.args...)
	}
	tx.n++
	tx.write = tx.write || spec.write || spec.name == "copy"
	tx.denyoom = tx.denyoom || spec.denyoom
	c.reply(replyQueued)
}

func (c *client) cmdMulti(*command) {
	if c.tx == nil {
		c.tx = &txState{}
	}
	if c.tx.multi {
		c.replyErr(fmt.Errorf("%w: MULTI calls can not be nested", ErrBusyTx))
		return
	}
	c.tx.multi = true
	c.reply(replyOK)
}

func (c *client) cmdDiscard(*command) {
	if c.tx == nil || !c.tx.multi {
		c.replyErr(fmt.Errorf("%w: DISCARD without MULTI", ErrBusyTx))
		return
	}
	c.resetTx()
	c.reply(replyOK)
}

// resetTx drops the transaction and the watch.
func (c *client) resetTx() {
	if c.tx == nil {
		return
	}
	c.unwatch()
	c.tx = nil
}

func (c *client) unwatch() {
	tx := c.tx
	if tx == nil || tx.watch == nil {
		return
	}
	if _, err := tx.watch.do(appendCommandStr(nil, "UNWATCH"), 1, 0); err == nil {
		tx.watch.release()
	}
	tx.watch, tx.watchDB = nil, nil
}

func (c *client) cmdUnwatch(*command) {
	c.flush()
	c.unwatch()
	c.reply(replyOK)
}

func (c *client) cmdWatch(cmd *command) {
	if c.tx != nil && c.tx.multi {
		c.replyErr(fmt.Errorf("%w: WATCH inside MULTI is not allowed", ErrBusyTx))
		return
	}
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	if c.tx == nil {
		c.tx = &txState{}
	}
	c.flush()
	if c.tx.watch == nil {
		d, err := db.script.dedicated(context.Background())
		if err != nil {
			c.replyErr(err)
			return
		}
		c.tx.watch, c.tx.watchDB = d, db
	}
	c.viaWatch(cmd)
}

// viaWatch runs one command on the watch connection and queues its reply.
func (c *client) viaWatch(cmd *command) {
	c.w.wait()
	raw := cmd.raw
	if raw == nil {
		raw = appendCommand(nil, cmd.args...)
	}
	rs, err := c.tx.watch.do(raw, 1, 0)
	if err != nil {
		c.tx.watch, c.tx.watchDB = nil, nil
		c.replyErr(err)
		return
	}
	c.reply(rs[0])
}

func (c *client) cmdExec(*command) {
	tx := c.tx
	if tx == nil || !tx.multi {
		c.replyErr(fmt.Errorf("%w: EXEC without MULTI", ErrBusyTx))
		return
	}
	defer c.resetTx()
	if tx.failed {
		c.replyErr(ErrExecAbort)
		return
	}
	db, err := c.route()
	if err == nil && tx.write {
		db, err = c.admitWrite(db, tx.denyoom)
	}
	if err != nil {
		c.replyErr(err)
		return
	}
	if tx.watch != nil && (tx.watchDB.master != db.master || tx.watchDB.key != db.key) {
		c.reply(appendNullArray(nil)) // the db moved: the watch no longer holds
		return
	}
	c.w.wait()
	d := tx.watch
	if d == nil {
		if d, err = db.script.dedicated(context.Background()); err != nil {
			c.replyErr(err)
			return
		}
	}
	tx.watch = nil
	raw := appendCommandStr(nil, "MULTI")
	raw = append(raw, tx.queued...)
	raw = appendCommandStr(raw, "EXEC")
	n := tx.n + 2
	confirm := tx.write && db.confirmed
	if confirm {
		raw = append(raw, newBconnWait(c.p)...)
		n++
	}
	timeout := c.p.cfg.BackendTimeout
	if confirm {
		timeout += c.p.cfg.ConfirmTimeout
	}
	rs, err := d.do(raw, n, timeout)
	if err != nil {
		c.replyErr(err)
		return
	}
	d.release()
	exec := rs[tx.n+1]
	if confirm && len(exec) > 0 && exec[0] == '*' && string(exec) != "*-1\r\n" {
		if k, ok := replyInt(rs[n-1]); !ok || k < 1 {
			c.p.metrics.unconfirmed.Inc()
			c.replyErr(fmt.Errorf("%w (%s)", ErrNotConfirmed, c.p.cfg.ConfirmTimeout))
			return
		}
	}
	if tx.write && !confirm && string(exec) != "*-1\r\n" {
		c.rememberUntracked(db.st)
	}
	c.reply(exec)
}

// newBconnWait is the WAIT command confirmed writes use.
func newBconnWait(p *Proxy) []byte {
	return appendCommandStr(nil, "WAIT", "1", fmt.Sprint(p.cfg.ConfirmTimeout.Milliseconds()))
}

package proxy

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/tidwall/redcon"
)

// Pub/sub is confined per tenant db by naming: on the backend every channel
// and pattern of tenant db <tenant>/<index> is prefixed with
// "<tenant>/<index>:" (tenant names are [a-z0-9-], so no prefix is a prefix
// of another tenant's and none holds a glob character). PUBLISH, SUBSCRIBE
// and PSUBSCRIBE add the prefix, deliveries and PUBSUB answers strip it. A
// tenant's pattern is matched after its literal prefix, so `PSUBSCRIBE *`
// sees only its own channels, and a tenant can neither hear nor reach
// another tenant's channels nor the server's keyspace notifications (their
// real names never pass through unprefixed).
//
// Subscriptions live on the db's master, on a dedicated connection per
// subscribed client (a "leg"). They follow the db across moves without
// silent loss (pubsub_move.go): PUBLISH is held with the db's writes
// during a resize's hold; a proxy subscribes every subscriber of the held
// db on the resize's target too before it acknowledges the hold, and
// switches to that leg at the switch. A master change that was not
// prepared that way (a failover, a hold that lapsed, a lost backend
// connection) ends the client's connection after an error telling it to
// resubscribe: nothing is ever lost without the client being told.

// cmdSubscribe enters subscribed mode (or answers an UNSUBSCRIBE outside it
// like Redis does).
func (c *client) cmdSubscribe(cmd *command) {
	name := strings.ToLower(string(cmd.args[0]))
	if name == "unsubscribe" || name == "punsubscribe" {
		b := []byte(nil)
		if len(cmd.args) == 1 {
			b = redcon.AppendArray(b, 3)
			b = redcon.AppendBulkString(b, name)
			b = redcon.AppendNull(b)
			b = redcon.AppendInt(b, 0)
		}
		for _, ch := range cmd.args[1:] {
			b = redcon.AppendArray(b, 3)
			b = redcon.AppendBulkString(b, name)
			b = redcon.AppendBulk(b, ch)
			b = redcon.AppendInt(b, 0)
		}
		c.reply(b)
		return
	}
	if _, err := c.route(); err != nil {
		c.replyErr(err)
		return
	}
	c.flush()
	ps, err := c.p.startSubscribed(c)
	if err != nil {
		c.replyErr(err)
		return
	}
	c.ps = ps
	c.pubsubCommand(cmd)
}

// pubsubCommand handles a request in subscribed mode.
func (c *client) pubsubCommand(cmd *command) {
	ps := c.ps
	name := strings.ToLower(string(cmd.args[0]))
	switch name {
	case "subscribe", "unsubscribe", "psubscribe", "punsubscribe":
		if len(cmd.args) == 1 && (name == "subscribe" || name == "psubscribe") {
			c.replyErr(fmt.Errorf("%w for '%s' command", ErrArity, name))
			return
		}
		p := ps.prefix
		if name[0] == 'p' {
			p = ps.gprefix
		}
		args := [][]byte{cmd.args[0]}
		for _, a := range cmd.args[1:] {
			args = append(args, append([]byte(p), a...))
		}
		ps.subscribe(name, args)
	case "ping":
		if len(cmd.args) > 2 {
			c.replyErr(fmt.Errorf("%w for 'ping' command", ErrArity))
			return
		}
		ps.ping(appendCommand(nil, cmd.args...), pongTenant)
	case "quit":
		c.reply(replyOK)
		c.quit = true
	case "reset":
		ps.stop()
		c.ps = nil
		c.cmdReset(cmd)
	default:
		// Still subscribed? Ask the backend, in order after everything
		// sent so far.
		ps.ping(appendCommandStr(nil, "PING"), pongProbe)
		subscribed := true
		select {
		case subscribed = <-ps.probe:
		case <-ps.quit:
		case <-time.After(c.p.cfg.BackendTimeout):
		}
		if subscribed {
			c.replyErr(fmt.Errorf("Can't execute '%.64s': %w", cmd.args[0], ErrPubSubOnly))
			return
		}
		ps.stop()
		c.ps = nil
		c.handle(cmd)
	}
}

func escapeGlob(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// strip removes the namespace from a push message's channel and pattern.
func (ps *psState) strip(v *value) {
	if v.t != '*' || len(v.elems) < 3 {
		return
	}
	cut := func(e *value, p string) {
		if !e.null && bytes.HasPrefix(e.str, []byte(p)) {
			e.str = e.str[len(p):]
		}
	}
	switch string(v.elems[0].str) {
	case "message", "subscribe", "unsubscribe":
		cut(&v.elems[1], ps.prefix)
	case "psubscribe", "punsubscribe":
		cut(&v.elems[1], ps.gprefix)
	case "pmessage":
		cut(&v.elems[1], ps.gprefix)
		if len(v.elems) > 2 {
			cut(&v.elems[2], ps.prefix)
		}
	}
}

// cmdPublish publishes into the tenant db's namespace. A publish is held
// and fenced like a write: during a resize's hold it waits, and is sent to
// the new master after the switch, so that subscribers, whose connections
// switch with the hold, miss nothing.
func (c *client) cmdPublish(cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	if db, err = c.admitPublish(db); err != nil {
		c.replyErr(err)
		return
	}
	raw := appendCommand(nil, cmd.args[0], append([]byte(db.pubsub), cmd.args[1]...), cmd.args[2])
	r := c.newReq()
	r.raw = raw
	c.w.add()
	db.master.send(c.pin, r)
}

// cmdPubsubChannels lists the tenant db's active channels.
func (c *client) cmdPubsubChannels(cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	pat := []byte("*")
	if len(cmd.args) > 2 {
		pat = cmd.args[2]
	}
	raw := c.call(db.master, appendCommand(nil, []byte("PUBSUB"), []byte("CHANNELS"), append([]byte(escapeGlob(db.pubsub)), pat...)))
	v, _, err := parseValue(raw)
	if err != nil || v.t != '*' {
		c.reply(raw)
		return
	}
	for i := range v.elems {
		v.elems[i].str = bytes.TrimPrefix(v.elems[i].str, []byte(db.pubsub))
	}
	c.reply(appendValue(nil, v))
}

// cmdPubsubNumsub counts subscribers of the tenant's channels.
func (c *client) cmdPubsubNumsub(cmd *command) {
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	args := [][]byte{[]byte("PUBSUB"), []byte("NUMSUB")}
	for _, a := range cmd.args[2:] {
		args = append(args, append([]byte(db.pubsub), a...))
	}
	raw := c.call(db.master, appendCommand(nil, args...))
	v, _, err := parseValue(raw)
	if err != nil || v.t != '*' {
		c.reply(raw)
		return
	}
	for i := 0; i < len(v.elems); i += 2 {
		v.elems[i].str = bytes.TrimPrefix(v.elems[i].str, []byte(db.pubsub))
	}
	c.reply(appendValue(nil, v))
}

func (c *client) cmdPubsubHelp(*command) {
	lines := []string{"PUBSUB <subcommand> [<arg> ...]. Subcommands are:", "CHANNELS [<pattern>]", "NUMSUB [<channel> ...]"}
	b := redcon.AppendArray(nil, len(lines))
	for _, l := range lines {
		b = redcon.AppendString(b, l)
	}
	c.reply(b)
}

// admitPublish is admitWrite for PUBLISH: self-fencing and the resize hold
// apply (a publish must not reach the old master once the hold is
// acknowledged), quota bans, read-only and write modes do not (a publish
// stores nothing). The publish counts as in flight, so a hold's
// acknowledgement waits for it.
func (c *client) admitPublish(db *dbRoute) (*dbRoute, error) {
	for {
		if c.clock() > c.p.fenceAt.Load() {
			return nil, ErrFenced
		}
		if !c.counted(db.st) {
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

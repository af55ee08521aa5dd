package proxy

import (
	"bytes"
	"context"
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
// real names never pass through unprefixed). Subscriptions live on the
// db's master, on a dedicated connection per subscribed client; messages
// published during a resize or failover to the other server are missed,
// as after a reconnect.

// psState is a connection in subscribed mode.
type psState struct {
	c       *client
	d       *dconn
	prefix  string
	gprefix string // prefix with glob characters escaped, for patterns
	pings   chan bool
	probe   chan bool
	done    chan struct{}
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
	db, err := c.route()
	if err != nil {
		c.replyErr(err)
		return
	}
	c.flush()
	d, err := db.master.dedicated(context.Background())
	if err != nil {
		c.replyErr(err)
		return
	}
	ps := &psState{c: c, d: d, prefix: db.pubsub, gprefix: escapeGlob(db.pubsub),
		pings: make(chan bool, 1024), probe: make(chan bool, 1), done: make(chan struct{})}
	c.ps = ps
	go ps.push()
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
		ps.send(appendCommand(nil, args...))
	case "ping":
		if len(cmd.args) > 2 {
			c.replyErr(fmt.Errorf("%w for 'ping' command", ErrArity))
			return
		}
		ps.pings <- false
		ps.send(appendCommand(nil, cmd.args...))
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
		ps.pings <- true
		ps.send(appendCommandStr(nil, "PING"))
		subscribed := true
		select {
		case subscribed = <-ps.probe:
		case <-ps.done:
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

func (ps *psState) send(raw []byte) {
	_ = ps.d.nc.SetWriteDeadline(time.Now().Add(ps.c.p.cfg.BackendTimeout))
	if _, err := ps.d.nc.Write(raw); err != nil {
		ps.d.close()
	}
}

// stop ends subscribed mode: the dedicated connection is closed (its
// subscriptions die with it) and the pusher has exited when stop returns.
func (ps *psState) stop() {
	ps.d.close()
	<-ps.done
}

// push relays the backend's messages to the tenant, stripping the prefix.
func (ps *psState) push() {
	defer close(ps.done)
	c := ps.c
	var out []byte
	for {
		raw, err := ps.d.rr.next()
		if err != nil {
			if !ps.d.broken {
				// The backend went away: the tenant must resubscribe.
				_ = c.nc.Close()
			}
			return
		}
		v, _, err := parseValue(raw)
		if err != nil {
			_ = c.nc.Close()
			return
		}
		if isPong(v) {
			internal := false
			select {
			case internal = <-ps.pings:
			default:
			}
			if internal {
				still := v.t == '*'
				ps.probe <- still
				if !still {
					return
				}
				continue
			}
		} else {
			ps.strip(&v)
		}
		out = appendValue(out[:0], v)
		if err := c.write(out); err != nil {
			_ = c.nc.Close()
			return
		}
	}
}

func isPong(v value) bool {
	if v.t == '+' && string(v.str) == "PONG" {
		return true
	}
	return v.t == '*' && len(v.elems) == 2 && string(v.elems[0].str) == "pong"
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

// cmdPublish publishes into the tenant db's namespace.
func (c *client) cmdPublish(cmd *command) {
	db, err := c.route()
	if err != nil {
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

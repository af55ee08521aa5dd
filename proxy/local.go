package proxy

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/granary-db/granary/metadb"
	"github.com/tidwall/redcon"
)

// Commands the proxy answers for the connection itself: authentication,
// db selection, connection naming, and tenant views of INFO and CONFIG.

func (c *client) cmdAuth(cmd *command) {
	var user, pass []byte
	switch len(cmd.args) {
	case 2:
		pass = cmd.args[1]
	case 3:
		user, pass = cmd.args[1], cmd.args[2]
	default:
		c.replyErr(ErrSyntax)
		return
	}
	if err := c.authenticate(user, pass); err != nil {
		c.replyErr(err)
		return
	}
	c.reply(replyOK)
}

// authenticate checks credentials against the snapshot's tenants (password
// hashes, compared in constant time). With no user, or user "default", the
// tenant is found by its password, which is a 256-bit random secret. On
// success the connection belongs to that tenant, on db 0, with no
// transaction or watch of its previous identity left.
func (c *client) authenticate(user, pass []byte) error {
	var ti *tenantInfo
	snap := c.p.snap.Load()
	if len(user) == 0 || string(user) == "default" {
		ti = snap.byHash[metadb.HashSecret(string(pass))]
	} else {
		ti = snap.tenants[string(user)]
		if ti == nil {
			ti = c.p.lookupTenant(string(user))
		}
		if ti != nil && !metadb.SecretMatches(ti.hash, string(pass)) {
			ti = nil
		}
	}
	if ti == nil {
		c.p.metrics.authFailures.Inc()
		return ErrWrongPass
	}
	if err := c.admitTenant(ti); err != nil {
		// As Redis at maxclients: the error, then the connection closes.
		c.quit = true
		return err
	}
	c.resetTx()
	c.authed, c.tenant, c.index, c.dbOK = true, ti.name, 0, false
	c.lim = &c.p.authLimits
	return nil
}

// lookupTenant loads a tenant that the snapshot does not know yet (its
// TenantChanged message may still be on the way). It is rate limited, so a
// flood of AUTH with unknown names does not flood metadb.
func (p *Proxy) lookupTenant(name string) *tenantInfo {
	if !validTenantName(name) {
		return nil
	}
	select {
	case p.lookupSem <- struct{}{}:
		defer func() { <-p.lookupSem }()
	default:
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.BackendTimeout)
	defer cancel()
	t, err := p.store.Tenant(ctx, name)
	if err != nil {
		return nil
	}
	return p.newTenantInfo(t)
}

func validTenantName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '-' {
			return false
		}
	}
	return true
}

// cmdHello answers HELLO the way a server that speaks only RESP2 does:
// HELLO 3 gets -NOPROTO (clients such as go-redis then fall back to AUTH),
// HELLO [2] [AUTH user pass] [SETNAME name] works.
func (c *client) cmdHello(cmd *command) {
	args := cmd.args[1:]
	if len(args) > 0 {
		v, ok := atoi(args[0])
		if !ok {
			c.replyErr(fmt.Errorf("%w: Protocol version is not an integer or out of range", ErrSyntax))
			return
		}
		if v != 2 {
			c.replyErr(ErrNoProto)
			return
		}
		args = args[1:]
	}
	var user, pass, name []byte
	haveAuth, haveName := false, false
	for i := 0; i < len(args); i++ {
		opt := strings.ToLower(string(args[i]))
		switch {
		case opt == "auth" && i+2 < len(args):
			user, pass, haveAuth = args[i+1], args[i+2], true
			i += 2
		case opt == "setname" && i+1 < len(args):
			name, haveName = args[i+1], true
			i++
		default:
			c.replyErr(fmt.Errorf("%w in HELLO option '%.64s'", ErrSyntax, args[i]))
			return
		}
	}
	if haveAuth {
		if err := c.authenticate(user, pass); err != nil {
			c.replyErr(err)
			return
		}
	}
	if !c.authed {
		c.replyErr(fmt.Errorf("%w HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time", ErrNoAuth))
		return
	}
	if haveName {
		if !validClientName(name) {
			c.replyErr(fmt.Errorf("%w: Client names cannot contain spaces, newlines or special characters.", ErrSyntax))
			return
		}
		c.name = string(name)
	}
	b := redcon.AppendArray(nil, 14)
	b = redcon.AppendBulkString(b, "server")
	b = redcon.AppendBulkString(b, "redis")
	b = redcon.AppendBulkString(b, "version")
	b = redcon.AppendBulkString(b, c.p.cfg.RedisVersion)
	b = redcon.AppendBulkString(b, "proto")
	b = redcon.AppendInt(b, 2)
	b = redcon.AppendBulkString(b, "id")
	b = redcon.AppendInt(b, int64(c.id))
	b = redcon.AppendBulkString(b, "mode")
	b = redcon.AppendBulkString(b, "standalone")
	b = redcon.AppendBulkString(b, "role")
	b = redcon.AppendBulkString(b, "master")
	b = redcon.AppendBulkString(b, "modules")
	b = redcon.AppendArray(b, 0)
	c.reply(b)
}

func (c *client) cmdQuit(*command) {
	c.reply(replyOK)
	c.quit = true
}

func (c *client) cmdPing(cmd *command) {
	switch len(cmd.args) {
	case 1:
		c.reply(replyPong)
	case 2:
		c.reply(redcon.AppendBulk(nil, cmd.args[1]))
	default:
		c.replyErr(fmt.Errorf("%w for 'ping' command", ErrArity))
	}
}

func (c *client) cmdEcho(cmd *command) { c.reply(redcon.AppendBulk(nil, cmd.args[1])) }

// cmdSelect picks one of the tenant's own dbs by its index.
func (c *client) cmdSelect(cmd *command) {
	n, ok := atoi(cmd.args[1])
	if !ok {
		c.replyErr(fmt.Errorf("%w: value is not an integer or out of range", ErrSyntax))
		return
	}
	if n < 0 || n > 1<<31 || c.snap.dbs[dbKey{c.tenant, uint32(n)}] == nil {
		c.replyErr(ErrDBRange)
		return
	}
	if c.tx != nil && c.tx.watch != nil && uint32(n) != c.index {
		c.replyErr(fmt.Errorf("SELECT while WATCH is active: %w; UNWATCH first", ErrBusyTx))
		return
	}
	c.index, c.dbOK = uint32(n), false
	c.reply(replyOK)
}

// cmdReset returns the connection to its initial state, as Redis's RESET:
// no transaction, no subscriptions, db 0, not authenticated.
func (c *client) cmdReset(*command) {
	c.resetTx()
	c.releaseTenant()
	c.authed, c.tenant, c.index, c.dbOK, c.name = false, "", 0, false, ""
	c.lim = &c.p.unauthLimits
	c.reply([]byte("+RESET\r\n"))
}

func validClientName(b []byte) bool {
	for _, ch := range b {
		if ch < '!' || ch > '~' {
			return false
		}
	}
	return true
}

func (c *client) cmdClientSetName(cmd *command) {
	if len(cmd.args) != 3 {
		c.replyErr(fmt.Errorf("%w for 'client|setname' command", ErrArity))
		return
	}
	if !validClientName(cmd.args[2]) {
		c.replyErr(fmt.Errorf("%w: Client names cannot contain spaces, newlines or special characters.", ErrSyntax))
		return
	}
	c.name = string(cmd.args[2])
	c.reply(replyOK)
}

func (c *client) cmdClientGetName(*command) {
	if c.name == "" {
		c.reply(redcon.AppendNull(nil))
		return
	}
	c.reply(redcon.AppendBulkString(nil, c.name))
}

func (c *client) cmdClientID(*command) { c.reply(redcon.AppendInt(nil, int64(c.id))) }

func (c *client) cmdClientSetInfo(cmd *command) {
	if len(cmd.args) != 4 {
		c.replyErr(fmt.Errorf("%w for 'client|setinfo' command", ErrArity))
		return
	}
	switch strings.ToLower(string(cmd.args[2])) {
	case "lib-name", "lib-ver":
		if !validClientName(cmd.args[3]) {
			c.replyErr(fmt.Errorf("%w: %s cannot contain spaces, newlines or special characters.", ErrSyntax, cmd.args[2]))
			return
		}
		c.lib = string(cmd.args[3])
		c.reply(replyOK)
	default:
		c.replyErr(fmt.Errorf("%w: Unrecognized option '%.64s'", ErrSyntax, cmd.args[2]))
	}
}

// cmdClientInfo describes this connection only.
func (c *client) cmdClientInfo(*command) {
	s := fmt.Sprintf("id=%d addr=%s laddr=%s name=%s db=%d user=%s resp=2\n",
		c.id, c.nc.RemoteAddr(), c.nc.LocalAddr(), c.name, c.index, c.tenant)
	c.reply(redcon.AppendBulkString(nil, s))
}

func (c *client) cmdClientOK(*command) { c.reply(replyOK) }

func (c *client) cmdClientHelp(*command) {
	lines := []string{"CLIENT <subcommand> [<arg> ...]. Subcommands are:", "GETNAME", "ID", "INFO", "SETNAME <name>", "SETINFO <option> <value>"}
	b := redcon.AppendArray(nil, len(lines))
	for _, l := range lines {
		b = redcon.AppendString(b, l)
	}
	c.reply(b)
}

// cmdConfigGet answers from a tenant view of the configuration, so tools
// that probe it (redis-benchmark, GUIs) keep working: maxmemory is the db's
// quota, and the number of databases covers the tenant's indexes.
func (c *client) cmdConfigGet(cmd *command) {
	view := c.configView()
	names := make([]string, 0, len(view))
	for k := range view {
		names = append(names, k)
	}
	sort.Strings(names)
	var pairs []string
	seen := map[string]bool{}
	for _, pat := range cmd.args[2:] {
		p := strings.ToLower(string(pat))
		for _, k := range names {
			if ok, _ := path.Match(p, k); ok && !seen[k] {
				seen[k] = true
				pairs = append(pairs, k, view[k])
			}
		}
	}
	b := redcon.AppendArray(nil, len(pairs))
	for _, s := range pairs {
		b = redcon.AppendBulkString(b, s)
	}
	c.reply(b)
}

func (c *client) configView() map[string]string {
	quota := int64(0)
	if db, err := c.route(); err == nil {
		quota = db.route.QuotaBytes
	}
	maxIndex := uint32(0)
	for k := range c.snap.dbs {
		if k.tenant == c.tenant && k.index > maxIndex {
			maxIndex = k.index
		}
	}
	return map[string]string{
		"maxmemory":              strconv.FormatInt(quota, 10),
		"maxmemory-policy":       "noeviction",
		"databases":              strconv.FormatUint(uint64(maxIndex)+1, 10),
		"save":                   "",
		"appendonly":             "no",
		"timeout":                strconv.FormatInt(int64(c.p.cfg.IdleTimeout.Seconds()), 10),
		"maxclients":             strconv.Itoa(c.p.cfg.MaxClients),
		"proto-max-bulk-len":     strconv.FormatInt(c.p.cfg.MaxBulk, 10),
		"notify-keyspace-events": "",
	}
}

// cmdInfo is a small INFO about the tenant's db, never the server's.
func (c *client) cmdInfo(cmd *command) {
	want := map[string]bool{}
	for _, a := range cmd.args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	sec := func(name string) bool { return all || want[name] }
	var b bytes.Buffer
	if sec("server") {
		fmt.Fprintf(&b, "# Server\r\nredis_version:%s\r\nredis_mode:standalone\r\nos:Granary proxy\r\narch_bits:64\r\ntcp_port:%s\r\ngranary_proxy:%s\r\n\r\n",
			c.p.cfg.RedisVersion, portOf(c.p.cfg.Advertise), c.p.cfg.ID)
	}
	db, _ := c.route()
	if sec("memory") {
		quota, size := int64(0), ""
		if db != nil {
			quota, size = db.route.QuotaBytes, db.route.Size
		}
		fmt.Fprintf(&b, "# Memory\r\nmaxmemory:%d\r\nmaxmemory_human:%s\r\nmaxmemory_policy:noeviction\r\n\r\n", quota, size)
	}
	if sec("persistence") {
		b.WriteString("# Persistence\r\nloading:0\r\n\r\n")
	}
	if sec("replication") {
		b.WriteString("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n")
	}
	if sec("granary") && db != nil {
		mode := "confirmed"
		if !db.confirmed {
			mode = "async"
		}
		fmt.Fprintf(&b, "# Granary\r\ntenant:%s\r\nindex:%d\r\nwrite_mode:%s\r\nover_quota:%d\r\n\r\n", c.tenant, c.index, mode, btoi(db.banned))
	}
	if sec("keyspace") {
		b.WriteString("# Keyspace\r\n")
		if db != nil {
			r := c.call(db.replicaOrMaster(), appendCommandStr(nil, "DBSIZE"))
			if n, ok := replyInt(r); ok && n > 0 {
				fmt.Fprintf(&b, "db%d:keys=%d,expires=0,avg_ttl=0\r\n", c.index, n)
			}
		}
	}
	c.reply(redcon.AppendBulk(nil, b.Bytes()))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

func (d *dbRoute) replicaOrMaster() *group {
	if d.replica != nil && !d.replica.isDown() {
		return d.replica
	}
	return d.master
}

// call sends one command to g and waits for its reply (after everything
// the batch dispatched before it). For local handlers that need a backend.
func (c *client) call(g *group, raw []byte) []byte {
	r := &request{raw: raw, w: c.w}
	c.w.add()
	g.send(c.pin, r)
	c.w.wait()
	return r.reply
}

// cmdFlushAll empties the tenant's own dbs, and nothing else: one FLUSHDB
// per db, each a write under that db's rules.
func (c *client) cmdFlushAll(cmd *command) {
	flush := [][]byte{[]byte("FLUSHDB")}
	if len(cmd.args) > 2 {
		c.replyErr(ErrSyntax)
		return
	}
	if len(cmd.args) == 2 {
		m := strings.ToUpper(string(cmd.args[1]))
		if m != "ASYNC" && m != "SYNC" {
			c.replyErr(ErrSyntax)
			return
		}
		flush = append(flush, []byte(m))
	}
	raw := appendCommand(nil, flush...)
	c.flush()
	var reqs []*request
	saved := c.index
	for _, db := range c.snap.tenantDBs(c.tenant) {
		c.index, c.dbOK = db.key.index, false
		d, err := c.route()
		if err == nil {
			d, err = c.admitWrite(d, false)
		}
		if err != nil {
			c.index, c.dbOK = saved, false
			c.replyErr(err)
			return
		}
		r := &request{raw: raw, w: c.w, write: true, confirm: d.confirmed}
		c.w.add()
		d.master.send(c.pin, r)
		reqs = append(reqs, r)
	}
	c.index, c.dbOK = saved, false
	c.w.wait()
	for _, r := range reqs {
		if isErrorReply(r.reply) {
			c.reply(r.reply)
			return
		}
	}
	c.reply(replyOK)
}

// cmdCopy forwards COPY within the selected db; COPY … DB n would cross dbs.
func (c *client) cmdCopy(cmd *command) {
	for _, a := range cmd.args[3:] {
		if strings.EqualFold(string(a), "db") {
			c.replyErr(fmt.Errorf("%w: 'copy' with DB", ErrNoPerm))
			return
		}
	}
	c.forward(&cmdSpec{name: "copy", write: true, denyoom: true, class: classWrite}, cmd)
}

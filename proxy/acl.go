package proxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"
)

// Backend connections never run tenant commands as Redis's default user.
// Every connection the proxy opens to a backend first makes sure two
// restricted ACL users exist on that server (ACL SETUSER is idempotent and
// not replicated, so this also covers a replica promoted by a failover),
// SELECTs the slot's db as the default user, and then AUTHs as one of them:
//
//   - the tenant user carries forwarded commands: all data commands, pub/sub
//     (the proxy prefixes every channel), but no admin, no scripting, no
//     SELECT/MOVE/SWAPDB/COPY/MIGRATE/FLUSHALL;
//   - the script user runs EVAL/EVALSHA, SCRIPT LOAD/EXISTS and MULTI/EXEC:
//     the same minus pub/sub, so that redis.call('select'|'flushall'|'move'|
//     'publish'…) inside a script is refused by Redis itself.
//
// ACLs know nothing of db numbers; db confinement comes from the SELECT the
// proxy made and the users' inability to issue another one.
func aclRules(user, password string, pubsub bool) []string {
	rules := []string{"ACL", "SETUSER", user, "reset", "on"}
	if password == "" {
		rules = append(rules, "nopass")
	} else {
		rules = append(rules, ">"+password)
	}
	rules = append(rules, "~*")
	if pubsub {
		rules = append(rules, "&*")
	} else {
		rules = append(rules, "resetchannels")
	}
	rules = append(rules, "+@all", "-@admin", "-@dangerous", "-@connection", "-@transaction")
	if pubsub {
		rules = append(rules, "-@scripting")
	} else {
		rules = append(rules, "-@pubsub", "+multi", "+exec", "+discard", "+watch", "+unwatch")
	}
	rules = append(rules,
		"+ping", "+echo", "+wait", "+command", "+flushdb", "+keys", "+sort", "+sort_ro",
		"-move", "-copy", "-swapdb", "-migrate", "-restore", "-flushall", "-function", "-fcall", "-fcall_ro",
		"-spublish", "-ssubscribe", "-sunsubscribe", "-memory", "+memory|usage", "-object|freq",
		"-script|flush", "-script|kill", "-script|debug",
	)
	return rules
}

// backendHello is a connected, authenticated backend connection.
type backendHello struct {
	nc       net.Conn
	rr       *replyReader
	clientID int64 // CLIENT ID on the backend, for CLIENT UNBLOCK
}

// dialBackend connects to addr, ensures the restricted users, selects db
// and authenticates as user ("" stays the default user, for the proxy's own
// admin calls). It blocks up to the dial timeout plus one round trip.
func (p *Proxy) dialBackend(ctx context.Context, addr string, db int, user string) (*backendHello, error) {
	d := net.Dialer{Timeout: p.cfg.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %v", ErrBackend, addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	var b []byte
	n := 0
	if p.cfg.BackendPassword != "" {
		b = appendCommandStr(b, "AUTH", p.cfg.BackendPassword)
		n++
	}
	if user != "" {
		b = appendCommandStr(b, aclRules(p.cfg.TenantUser, p.cfg.BackendPassword, true)...)
		b = appendCommandStr(b, aclRules(p.cfg.ScriptUser, p.cfg.BackendPassword, false)...)
		n += 2
	}
	b = appendCommandStr(b, "CLIENT", "SETNAME", "granary-proxy")
	b = appendCommandStr(b, "SELECT", strconv.Itoa(db))
	b = appendCommandStr(b, "CLIENT", "ID")
	n += 3
	if user != "" {
		pw := p.cfg.BackendPassword
		if pw == "" {
			pw = "granary"
		}
		b = appendCommandStr(b, "AUTH", user, pw)
		n++
	}
	_ = nc.SetDeadline(time.Now().Add(p.cfg.DialTimeout + p.cfg.BackendTimeout))
	if _, err := nc.Write(b); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: handshake with %s: %v", ErrBackend, addr, err)
	}
	rr := newReplyReader(nc, 16<<10)
	h := &backendHello{nc: nc, rr: rr}
	for i := 0; i < n; i++ {
		raw, err := rr.next()
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("%w: handshake with %s: %v", ErrBackend, addr, err)
		}
		if isErrorReply(raw) {
			nc.Close()
			return nil, fmt.Errorf("%w: handshake with %s: %s", ErrBackend, addr, trimReply(raw))
		}
		if id, ok := replyInt(raw); ok {
			h.clientID = id
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return h, nil
}

// trimReply is a reply for an error message.
func trimReply(raw []byte) string {
	s := string(raw)
	if len(s) > 200 {
		s = s[:200]
	}
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	return s
}

// adminCall runs one command as the default user on addr and returns its
// raw reply. It is for the proxy's own rare calls (COMMAND, CLIENT UNBLOCK,
// INFO of the backend).
func (p *Proxy) adminCall(ctx context.Context, addr string, args ...string) ([]byte, error) {
	h, err := p.dialBackend(ctx, addr, 0, "")
	if err != nil {
		return nil, err
	}
	defer h.nc.Close()
	_ = h.nc.SetDeadline(time.Now().Add(p.cfg.BackendTimeout))
	if _, err := h.nc.Write(appendCommandStr(nil, args...)); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBackend, addr, err)
	}
	raw, err := h.rr.next()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBackend, addr, err)
	}
	return append([]byte(nil), raw...), nil
}

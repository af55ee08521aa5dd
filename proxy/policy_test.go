package proxy

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
)

func TestRespError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ErrNoAuth, "NOAUTH Authentication required."},
		{ErrWrongPass, "WRONGPASS invalid username-password pair or user is disabled."},
		{fmt.Errorf("%w: 'move'", ErrNoPerm), "NOPERM this command is not available to tenants, it reaches beyond your own dbs: 'move'"},
		{fmt.Errorf("db 2 is over its 64M quota: %w", ErrOverQuota), "OOM db 2 is over its 64M quota: commands that add data are refused until it shrinks: delete keys, let them expire, FLUSHDB, or resize it with PATCH /v1/dbs/{index}"},
		{ErrFenced, "READONLY " + ErrFenced.Error()},
		{fmt.Errorf("%w (1s)", ErrNotConfirmed), "ERR " + ErrNotConfirmed.Error() + " (1s)"},
		{fmt.Errorf("db 0: %w", ErrHoldTimeout), "TRYAGAIN db 0: " + ErrHoldTimeout.Error()},
		{ErrHoldFull, "TRYAGAIN " + ErrHoldFull.Error()},
		{ErrDBRange, "ERR DB index is out of range"},
		{fmt.Errorf("%w 'foo', with args beginning with: ", ErrUnknownCommand), "ERR unknown command 'foo', with args beginning with: "},
		{fmt.Errorf("%w for 'get' command", ErrArity), "ERR wrong number of arguments for 'get' command"},
		{ErrExecAbort, "EXECABORT Transaction discarded because of previous errors."},
		{ErrNoProto, "NOPROTO sorry, this protocol version is not supported."},
		{protoErr("invalid bulk length"), "ERR Protocol error: invalid bulk length"},
		{fmt.Errorf("%w: backend 1.2.3.4:5 db 0 unavailable", ErrBackend), "ERR backend unavailable: backend 1.2.3.4:5 db 0 unavailable"},
		{ErrTooMany, "ERR max number of clients reached"},
		{fmt.Errorf("db 1: %w", ErrNoReplica), "NOREPLICAS db 1: " + ErrNoReplica.Error()},
	} {
		if got := respError(tc.err); got != tc.want {
			t.Errorf("respError(%v): got %q, want %q", tc.err, got, tc.want)
		}
	}
	if got := string(appendError(nil, fmt.Errorf("a\r\nb: %w", ErrSyntax))); got != "-ERR a  b: syntax error\r\n" {
		t.Errorf("newlines must not break the framing: %q", got)
	}
}

// TestCommandPolicy checks Granary's policy against the real command table
// of the Redis version we run.
func TestCommandPolicy(t *testing.T) {
	s := redistest.Start(t)
	nc, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	nc.Write(appendCommandStr(nil, "COMMAND"))
	raw, err := newReplyReader(nc, 4096).next()
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := parseCommandReply(raw)
	if err != nil {
		t.Fatal(err)
	}
	tbl := buildTable(cmds)
	kinds := map[cmdKind]string{kRefuse: "refuse", kForward: "forward", kBlocking: "blocking", kLocal: "local"}
	for _, tc := range []struct {
		args           []string
		kind           string
		write, denyoom bool
	}{
		{[]string{"get", "k"}, "forward", false, false},
		{[]string{"SET", "k", "v"}, "forward", true, true},
		{[]string{"del", "k"}, "forward", true, false},
		{[]string{"unlink", "k"}, "forward", true, false},
		{[]string{"expire", "k", "1"}, "forward", true, false},
		{[]string{"flushdb"}, "forward", true, false},
		{[]string{"keys", "*"}, "forward", false, false},
		{[]string{"scan", "0"}, "forward", false, false},
		{[]string{"dbsize"}, "forward", false, false},
		{[]string{"randomkey"}, "forward", false, false},
		{[]string{"sort", "k"}, "forward", true, true},
		{[]string{"incr", "k"}, "forward", true, true},
		{[]string{"xadd", "s", "*", "f", "v"}, "forward", true, true},
		{[]string{"object", "encoding", "k"}, "forward", false, false},
		{[]string{"memory", "usage", "k"}, "forward", false, false},
		{[]string{"command", "docs"}, "forward", false, false},
		{[]string{"time"}, "forward", false, false},
		{[]string{"blpop", "k", "0"}, "blocking", true, false},
		{[]string{"blmove", "a", "b", "left", "left", "0"}, "blocking", true, true},
		{[]string{"xread", "streams", "s", "0"}, "blocking", false, false},
		{[]string{"auth", "p"}, "local", false, false},
		{[]string{"select", "0"}, "local", false, false},
		{[]string{"config", "get", "x"}, "local", false, false},
		{[]string{"client", "setname", "x"}, "local", false, false},
		{[]string{"flushall"}, "local", true, false},
		{[]string{"copy", "a", "b"}, "local", true, true},
		{[]string{"eval", "return 1", "0"}, "local", false, false},
		{[]string{"publish", "c", "m"}, "local", false, false},
		{[]string{"subscribe", "c"}, "local", false, false},
		{[]string{"multi"}, "local", false, false},
		{[]string{"info"}, "local", false, false},
		{[]string{"move", "k", "1"}, "refuse", true, false},
		{[]string{"swapdb", "0", "1"}, "refuse", true, false},
		{[]string{"migrate", "h", "1", "k", "0", "1"}, "refuse", true, false},
		{[]string{"restore", "k", "0", "x"}, "refuse", true, true},
		{[]string{"config", "set", "a", "b"}, "refuse", false, false},
		{[]string{"client", "list"}, "refuse", false, false},
		{[]string{"client", "kill", "x"}, "refuse", false, false},
		{[]string{"object", "freq", "k"}, "refuse", false, false},
		{[]string{"memory", "stats"}, "refuse", false, false},
		{[]string{"debug", "sleep", "0"}, "refuse", false, false},
		{[]string{"monitor"}, "refuse", false, false},
		{[]string{"sync"}, "refuse", false, false},
		{[]string{"psync", "?", "-1"}, "refuse", false, false},
		{[]string{"replicaof", "no", "one"}, "refuse", false, false},
		{[]string{"shutdown"}, "refuse", false, false},
		{[]string{"acl", "whoami"}, "refuse", false, false},
		{[]string{"module", "list"}, "refuse", false, false},
		{[]string{"slowlog", "get"}, "refuse", false, false},
		{[]string{"function", "load", "x"}, "refuse", true, true},
		{[]string{"fcall", "f", "0"}, "refuse", false, false},
		{[]string{"script", "flush"}, "refuse", false, false},
		{[]string{"wait", "0", "0"}, "refuse", false, false},
		{[]string{"pubsub", "numpat"}, "refuse", false, false},
		{[]string{"spublish", "c", "m"}, "refuse", false, false},
		{[]string{"lastsave"}, "refuse", false, false},
		{[]string{"role"}, "refuse", false, false},
		{[]string{"bgsave"}, "refuse", false, false},
		{[]string{"pfdebug", "getreg", "k"}, "refuse", true, true},
	} {
		args := make([][]byte, len(tc.args))
		for i, a := range tc.args {
			args[i] = []byte(a)
		}
		spec, err := tbl.lookup(args)
		if err != nil {
			t.Errorf("%v: lookup: %v", tc.args, err)
			continue
		}
		if kinds[spec.kind] != tc.kind || spec.write != tc.write || spec.denyoom != tc.denyoom {
			t.Errorf("%v: got %s write=%v denyoom=%v, want %s write=%v denyoom=%v",
				tc.args, kinds[spec.kind], spec.write, spec.denyoom, tc.kind, tc.write, tc.denyoom)
		}
	}
	if _, err := tbl.lookup([][]byte{[]byte("nosuchcommand")}); err == nil {
		t.Error("unknown command found")
	}
	if _, err := tbl.lookup([][]byte{[]byte("config"), []byte("nosuch")}); err == nil {
		t.Error("unknown subcommand found")
	}
	// Everything forwarded is a data command: no admin command slipped in.
	for name, s := range tbl.m {
		all := []*cmdSpec{s}
		for _, sub := range s.subs {
			all = append(all, sub)
		}
		for _, c := range all {
			if c.kind == kForward || c.kind == kBlocking {
				for _, bc := range cmds {
					if bc.name == name && (bc.cats["admin"] || bc.cats["pubsub"] || bc.cats["scripting"]) {
						t.Errorf("%s is forwarded but is in a refused category", c.name)
					}
				}
			}
		}
	}
}

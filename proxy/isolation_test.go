package proxy

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// serverDump is every key of every db of a server with its DUMP payload.
func serverDump(t *testing.T, s *redistest.Server, skip map[int]bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for db := 0; db < 16; db++ {
		if skip[db] {
			continue
		}
		c := s.ClientDB(t, db)
		keys, err := c.Keys(t.Context(), "*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if strings.HasPrefix(k, "granary:test:") {
				continue
			}
			d, err := c.Dump(t.Context(), k).Result()
			if err != nil {
				t.Fatalf("dump db %d %q: %v", db, k, err)
			}
			out[fmt.Sprintf("%d/%s", db, k)] = d
		}
	}
	return out
}

func diffDumps(before, after map[string]string) string {
	var d []string
	for k, v := range before {
		if a, ok := after[k]; !ok {
			d = append(d, "missing "+k)
		} else if a != v {
			d = append(d, "changed "+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			d = append(d, "new "+k)
		}
	}
	sort.Strings(d)
	return strings.Join(d, ", ")
}

// TestIsolation: tenant A tries to escape its dbs in every way we know;
// each attempt is refused or confined, and tenant B's data — and every db
// that is not A's — is byte-for-byte unchanged on master and replica.
func TestIsolation(t *testing.T) {
	e := newEnv(t)
	passA, passB := e.tenant("alpha"), e.tenant("bravo")
	a0 := e.db("alpha", metadb.WriteConfirmed)
	a1 := e.db("alpha", metadb.WriteConfirmed)
	b0 := e.db("bravo", metadb.WriteConfirmed)
	ctx := e.ctx

	// B's data, of every type, with an expiry; and a key in a free slot db.
	cb := e.client("bravo", passB, b0.Index)
	for _, err := range []error{
		cb.Set(ctx, "secret", "b-value", 0).Err(),
		cb.Set(ctx, "k", "bravo-k", time.Hour).Err(),
		cb.HSet(ctx, "bh", "f", "v").Err(),
		cb.RPush(ctx, "bl", "1", "2").Err(),
		cb.ZAdd(ctx, "bz", redis.Z{Score: 1, Member: "m"}).Err(),
		cb.XAdd(ctx, &redis.XAddArgs{Stream: "bs", ID: "1-1", Values: []string{"f", "v"}}).Err(),
		e.master.ClientDB(t, 9).Set(ctx, "unowned", "x", 0).Err(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// B listens on "ch" and on keyspace events, to catch leaks.
	bsub := cb.Subscribe(ctx, "ch")
	defer bsub.Close()
	if _, err := bsub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	// Keyspace notifications on, so that a leak would have something to leak.
	if err := e.master.Client(t).ConfigSet(ctx, "notify-keyspace-events", "KEA").Err(); err != nil {
		t.Fatal(err)
	}
	ca := e.client("alpha", passA, a0.Index)
	if err := ca.Set(ctx, "k", "alpha-k", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := ca.RPush(ctx, "al", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.client("alpha", passA, a1.Index).Set(ctx, "a1key", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	aSlots := map[int]bool{a0.SlotDB: true, a1.SlotDB: true, 15: true}
	masterBefore := serverDump(t, e.master, aSlots)
	waitReplicated(t, e)
	replicaBefore := serverDump(t, e.replica, aSlots)
	if len(masterBefore) < 7 {
		t.Fatalf("setup: only %d keys outside A's dbs", len(masterBefore))
	}

	r := e.raw()
	if got := r.do("AUTH", "alpha", passA); got != "+OK" {
		t.Fatalf("auth: %s", got)
	}
	script := func(body string) []string { return []string{"EVAL", body, "1", "k"} }
	for _, tc := range []struct {
		name string
		cmd  []string
		want string // prefix of the reply
	}{
		{"select unowned index 2", []string{"SELECT", "2"}, "-ERR DB index is out of range"},
		{"select unowned index 7", []string{"SELECT", "7"}, "-ERR DB index is out of range"},
		{"select B's slot number", []string{"SELECT", fmt.Sprint(max(b0.SlotDB, 2))}, "-ERR DB index is out of range"},
		{"select negative", []string{"SELECT", "-1"}, "-ERR DB index is out of range"},
		{"select huge", []string{"SELECT", "99999999999"}, "-ERR DB index is out of range"},
		{"move", []string{"MOVE", "k", fmt.Sprint(b0.SlotDB)}, "-NOPERM"},
		{"swapdb", []string{"SWAPDB", "0", fmt.Sprint(b0.SlotDB)}, "-NOPERM"},
		{"copy with db", []string{"COPY", "k", "k2", "DB", fmt.Sprint(b0.SlotDB)}, "-NOPERM"},
		{"migrate", []string{"MIGRATE", "127.0.0.1", "1", "k", "0", "1000"}, "-NOPERM"},
		{"restore", []string{"RESTORE", "r", "0", "\x00\x01x\n\x00"}, "-NOPERM"},
		{"script select", script("return redis.call('select', 9)"), "-ERR"},
		{"script select then write", script("redis.call('select', 9); return redis.call('set', 'k', 'pwned')"), "-ERR"},
		{"script flushall", script("return redis.call('flushall')"), "-ERR"},
		{"script move", script("return redis.call('move', KEYS[1], 9)"), "-ERR"},
		{"script swapdb", script("return redis.call('swapdb', 0, 9)"), "-ERR"},
		{"script copy db", script("return redis.call('copy', KEYS[1], 'x', 'db', 9)"), "-ERR"},
		{"script publish raw channel", script("return redis.call('publish', 'bravo/0:ch', 'leak')"), "-ERR"},
		{"script config", script("return redis.call('config', 'set', 'maxmemory', '1')"), "-ERR"},
		{"script info", script("return redis.call('info')"), "-ERR"},
		{"script pcall select", script("local r = redis.pcall('select', 9); if type(r) == 'table' and r.err then return 'refused' end; return redis.call('get', 'secret')"), "$refused"},
		{"function load", []string{"FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() return redis.call('select', 9) end)"}, "-NOPERM"},
		{"fcall", []string{"FCALL", "f", "0"}, "-NOPERM"},
		{"script flush", []string{"SCRIPT", "FLUSH"}, "-NOPERM"},
		{"script kill", []string{"SCRIPT", "KILL"}, "-NOPERM"},
		{"client list", []string{"CLIENT", "LIST"}, "-NOPERM"},
		{"client kill", []string{"CLIENT", "KILL", "ID", "1"}, "-NOPERM"},
		{"client pause", []string{"CLIENT", "PAUSE", "1000"}, "-NOPERM"},
		{"monitor", []string{"MONITOR"}, "-NOPERM"},
		{"config set", []string{"CONFIG", "SET", "maxmemory", "1"}, "-NOPERM"},
		{"config rewrite", []string{"CONFIG", "REWRITE"}, "-NOPERM"},
		{"debug", []string{"DEBUG", "SLEEP", "0"}, "-NOPERM"},
		{"debug object", []string{"DEBUG", "OBJECT", "k"}, "-NOPERM"},
		{"sync", []string{"SYNC"}, "-NOPERM"},
		{"psync", []string{"PSYNC", "?", "-1"}, "-NOPERM"},
		{"replicaof", []string{"REPLICAOF", "NO", "ONE"}, "-NOPERM"},
		{"slaveof", []string{"SLAVEOF", "127.0.0.1", "1"}, "-NOPERM"},
		{"shutdown", []string{"SHUTDOWN", "NOSAVE"}, "-NOPERM"},
		{"acl setuser", []string{"ACL", "SETUSER", "x", "on"}, "-NOPERM"},
		{"acl list", []string{"ACL", "LIST"}, "-NOPERM"},
		{"module", []string{"MODULE", "LIST"}, "-NOPERM"},
		{"slowlog", []string{"SLOWLOG", "GET"}, "-NOPERM"},
		{"latency", []string{"LATENCY", "LATEST"}, "-NOPERM"},
		{"memory stats", []string{"MEMORY", "STATS"}, "-NOPERM"},
		{"object freq", []string{"OBJECT", "FREQ", "k"}, "-NOPERM"},
		{"role", []string{"ROLE"}, "-NOPERM"},
		{"lastsave", []string{"LASTSAVE"}, "-NOPERM"},
		{"bgsave", []string{"BGSAVE"}, "-NOPERM"},
		{"spublish", []string{"SPUBLISH", "ch", "x"}, "-NOPERM"},
		{"ssubscribe", []string{"SSUBSCRIBE", "ch"}, "-NOPERM"},
		{"pubsub numpat", []string{"PUBSUB", "NUMPAT"}, "-NOPERM"},
		{"wait", []string{"WAIT", "0", "0"}, "-NOPERM"},
		{"auth as B, wrong password", []string{"AUTH", "bravo", "guess"}, "-WRONGPASS"},
		{"auth with B's name as password", []string{"AUTH", "bravo"}, "-WRONGPASS"},
		{"auth default with nothing", []string{"AUTH", "default", ""}, "-WRONGPASS"},
		{"hello 3 as B", []string{"HELLO", "3", "AUTH", "bravo", passB}, "-NOPROTO"},
		{"hello 2 as B wrong", []string{"HELLO", "2", "AUTH", "bravo", "guess"}, "-WRONGPASS"},
		{"still A after failed auths", []string{"GET", "k"}, "$alpha-k"},
		{"keys sees only A", []string{"KEYS", "[^a]*"}, "[k]"},
		{"scan sees only A", []string{"SCAN", "0", "MATCH", "[^a]*", "COUNT", "1000"}, "[0 [k]]"},
		{"dbsize only A", []string{"DBSIZE"}, ":2"},
		{"randomkey only A", []string{"EVAL", "local k = redis.call('randomkey'); if k == 'k' or k == 'al' then return 'own' end; return k", "0"}, "$own"},
		{"exists B's key", []string{"EXISTS", "secret", "bh", "bl"}, ":0"},
		{"sort by B's keys", []string{"SORT", "al", "BY", "secret", "GET", "secret"}, "[nil]"},
		{"pubsub channels", []string{"PUBSUB", "CHANNELS", "*"}, "[]"},
		{"pubsub numsub B's channel", []string{"PUBSUB", "NUMSUB", "ch"}, "[ch :0]"},
		{"publish to B's channel name", []string{"PUBLISH", "ch", "leak"}, ":0"},
		{"publish to B's backend name", []string{"PUBLISH", "bravo/0:ch", "leak"}, ":0"},
		{"smuggled command in a bulk", []string{"SET", "x", "v\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n9\r\n"}, "+OK"},
		{"after smuggling still own db", []string{"EXISTS", "x", "secret"}, ":1"},
		{"select inside multi", []string{"MULTI"}, "+OK"},
		{"  select queued", []string{"SELECT", "1"}, "-ERR"},
		{"  exec aborts", []string{"EXEC"}, "-EXECABORT"},
		{"eval inside multi", []string{"MULTI"}, "+OK"},
		{"  eval refused", []string{"EVAL", "return 1", "0"}, "-ERR"},
		{"  exec aborts again", []string{"EXEC"}, "-EXECABORT"},
		{"flushall flushes only A", []string{"FLUSHALL"}, "+OK"},
		{"A's db 0 is empty", []string{"DBSIZE"}, ":0"},
		{"select own db 1", []string{"SELECT", "1"}, "+OK"},
		{"A's db 1 is empty", []string{"DBSIZE"}, ":0"},
		{"reset", []string{"RESET"}, "+RESET"},
		{"nothing after reset", []string{"GET", "secret"}, "-NOAUTH"},
	} {
		got := r.do(tc.cmd...)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: %v: got %q, want prefix %q", tc.name, tc.cmd, got, tc.want)
		}
	}

	// INFO and CONFIG GET show a tenant view, nothing of the server.
	ra := e.raw()
	ra.do("AUTH", "alpha", passA)
	info := ra.do("INFO", "everything")
	for _, leak := range []string{"connected_slaves:1", "slave0", "master_replid", "executable", "config_file", "run_id", "used_memory_human", fmt.Sprintf("db%d:", b0.SlotDB), "db9:"} {
		if strings.Contains(info, leak) {
			t.Errorf("INFO leaks %q:\n%s", leak, info)
		}
	}
	conf := ra.do("CONFIG", "GET", "*")
	for _, leak := range []string{"dir", "dbfilename", "requirepass", "masterauth", "logfile", "bind"} {
		if strings.Contains(conf, " "+leak+" ") {
			t.Errorf("CONFIG GET * leaks %q: %s", leak, conf)
		}
	}
	if got := ra.do("CLIENT", "INFO"); strings.Contains(got, "bravo") {
		t.Errorf("CLIENT INFO leaks: %s", got)
	}

	// Pub/sub: A's subscriptions, patterns and keyspace channels hear
	// nothing of B, and B hears nothing of A.
	sa := e.raw()
	sa.do("AUTH", "alpha", passA)
	sa.send(string(appendCommandStr(nil, "PSUBSCRIBE", "*", "__key*", "__keyspace@*")))
	for i := 0; i < 3; i++ {
		sa.reply()
	}
	sa.send(string(appendCommandStr(nil, "SUBSCRIBE", "ch", "bravo/0:ch", fmt.Sprintf("__keyspace@%d__:secret", b0.SlotDB))))
	for i := 0; i < 3; i++ {
		sa.reply()
	}
	if err := cb.Publish(ctx, "ch", "for-b-only").Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Set(ctx, "secret2", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Del(ctx, "secret2").Err(); err != nil {
		t.Fatal(err)
	}
	m, err := bsub.ReceiveTimeout(ctx, 2*time.Second)
	if err != nil {
		t.Fatalf("B did not get its own message: %v", err)
	}
	if msg, ok := m.(*redis.Message); !ok || msg.Payload != "for-b-only" {
		t.Fatalf("B got %v, want its own message (not A's leak)", m)
	}
	// A's ping is answered only after anything queued before it.
	sa.send(string(appendCommandStr(nil, "PING")))
	if got := sa.reply(); got != "[pong ]" {
		t.Fatalf("A's subscribed connection heard something: %q", got)
	}

	if diff := diffDumps(masterBefore, serverDump(t, e.master, aSlots)); diff != "" {
		t.Errorf("master data outside A's dbs changed: %s", diff)
	}
	waitReplicated(t, e)
	if diff := diffDumps(replicaBefore, serverDump(t, e.replica, aSlots)); diff != "" {
		t.Errorf("replica data outside A's dbs changed: %s", diff)
	}
	if got := cb.Get(ctx, "secret").Val(); got != "b-value" {
		t.Errorf("B's secret: got %q", got)
	}
}

// waitReplicated waits until the replica has everything the master has.
func waitReplicated(t *testing.T, e *testEnv) {
	t.Helper()
	if n, err := e.master.ClientDB(t, 15).Do(t.Context(), "WAIT", 1, 2000).Int(); err != nil || n < 1 {
		t.Fatalf("replica did not catch up: %v", err)
	}
}

package proxy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// TestSubscribedMode: a connection can subscribe, get refused normal
// commands while subscribed, unsubscribe from everything and go back to
// normal commands on the same connection.
func TestSubscribedMode(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteAsync)
	r := e.raw()
	r.do("AUTH", "acme", pass)
	if got := r.do("SUBSCRIBE", "a", "b"); got != "[subscribe a :1]" {
		t.Fatalf("subscribe: %q", got)
	}
	if got := r.reply(); got != "[subscribe b :2]" {
		t.Fatalf("subscribe b: %q", got)
	}
	if got := r.do("GET", "k"); !strings.HasPrefix(got, "-ERR Can't execute 'GET'") {
		t.Fatalf("GET while subscribed: %q", got)
	}
	if got := r.do("PING", "x"); got != "[pong x]" {
		t.Fatalf("PING while subscribed: %q", got)
	}
	pub := e.client("acme", pass, 0)
	if n := pub.Publish(e.ctx, "b", "hello").Val(); n != 1 {
		t.Fatalf("publish reached %d", n)
	}
	if got := r.reply(); got != "[message b hello]" {
		t.Fatalf("message: %q", got)
	}
	r.send(string(appendCommandStr(nil, "UNSUBSCRIBE")))
	got := []string{r.reply(), r.reply()}
	if !(strings.Contains(strings.Join(got, ","), "[unsubscribe a") && strings.Contains(got[1], ":0]")) {
		t.Fatalf("unsubscribe: %q", got)
	}
	if got := r.do("SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET after leaving subscribed mode: %q", got)
	}
	if got := r.do("GET", "k"); got != "$v" {
		t.Fatalf("GET after leaving subscribed mode: %q", got)
	}
}

// TestBlockedWrites: a blocked write is unblocked (a timeout reply) when a
// hold starts on its db, so the hold can be acknowledged; a client that
// disconnects while blocked frees its backend connection.
func TestBlockedWrites(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	ctx := e.ctx
	done := make(chan error, 1)
	go func() { done <- c.BLPop(ctx, 0, "q").Err() }()
	e.waitFor("blocked on the backend", func() bool {
		return strings.Contains(e.master.Client(t).Info(ctx, "clients").Val(), "blocked_clients:1")
	})
	v := e.hold("acme", db.Index, true, time.Now().Add(5*time.Second))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nil") {
			t.Fatalf("blpop unblocked with %v, want a nil (timeout) reply", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("blocked write not unblocked by the hold")
	}
	e.waitFor("hold acknowledged", func() bool {
		ms, _ := e.store.Members(ctx, metadb.KindProxy, time.Minute)
		return len(ms) == 1 && ms[0].AppliedVersion >= v
	})
	e.hold("acme", db.Index, false, time.Time{})

	r := e.raw()
	r.do("AUTH", "acme", pass)
	// The replies before a blocking command are not held back by it.
	start := time.Now()
	r.send(string(appendCommandStr(nil, "SET", "x", "1")) + string(appendCommandStr(nil, "BLPOP", "q3", "1")))
	if got := r.reply(); got != "+OK" || time.Since(start) > 700*time.Millisecond {
		t.Fatalf("reply before a blocking command: %q after %v", got, time.Since(start))
	}
	if got := r.reply(); got != "*nil" {
		t.Fatalf("blpop timeout: %q", got)
	}
	r.send(string(appendCommandStr(nil, "BLPOP", "q2", "0")))
	e.waitFor("blocked again", func() bool {
		return strings.Contains(e.master.Client(t).Info(ctx, "clients").Val(), "blocked_clients:1")
	})
	r.nc.Close()
	e.waitFor("backend released", func() bool {
		return strings.Contains(e.master.Client(t).Info(ctx, "clients").Val(), "blocked_clients:0")
	})
}

// TestFailoverReload: a Failover message makes the proxy reload the pair
// from metadb and send writes to the promoted replica, where it creates its
// restricted users before use.
func TestFailoverReload(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	ctx := e.ctx
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Promote the replica (the old master keeps running, unused).
	if err := e.replica.Client(t).Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.replica.Client(t).Do(ctx, "ACL", "DELUSER", "granary-tenant", "granary-script").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error {
		p.Master, p.Replica = e.replica.Addr, ""
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Announce(ctx, nil, "test", &buspb.Envelope{Payload: &buspb.Envelope_Failover{Failover: &buspb.Failover{
		Pair: e.pair.ID, OldMaster: e.master.Addr, NewMaster: e.replica.Addr}}}); err != nil {
		t.Fatal(err)
	}
	e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d != nil && d.route.Master == e.replica.Addr })
	// No replica now: a confirmed write is refused before it is written.
	if err := c.Set(ctx, "refused", "1", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
		t.Fatalf("confirmed write without a replica: %v", err)
	}
	if n := e.replica.ClientDB(t, db.SlotDB).Exists(ctx, "refused").Val(); n != 0 {
		t.Fatal("a refused write was written")
	}
	// The tenant switches to async.
	if _, err := e.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.WriteMode = metadb.WriteAsync
		return []*buspb.Envelope{{Payload: &buspb.Envelope_DbChanged{DbChanged: &buspb.DBChanged{Tenant: "acme", Index: uint32(db.Index), Change: buspb.Change_CHANGE_CHANGED}}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	e.waitRoute("acme", db.Index, func(d *dbRoute) bool { return d != nil && !d.confirmed })
	if err := c.Set(ctx, "after", "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := e.replica.ClientDB(t, db.SlotDB).Get(ctx, "after").Val(); got != "2" {
		t.Fatalf("write after failover went elsewhere: new master has %q", got)
	}
	if got := c.Eval(ctx, "return redis.call('get', KEYS[1])", []string{"before"}).Val(); got != "1" {
		t.Fatalf("script on the new master: %v", got)
	}
	if got := c.Get(ctx, "before").Val(); got != "1" {
		t.Fatalf("read after failover: %q", got)
	}
}

// TestActivityReport: the proxy's heartbeats on the bus say which dbs were
// read and written.
func TestActivityReport(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	var mu sync.Mutex
	var writes, reads uint64
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	subs, err := e.store.BusSubscribers(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	go e.store.Subscribe(ctx, metadb.Subscriber{
		Resync: func(context.Context) (uint64, error) { return 0, nil },
		Handle: func(_ context.Context, env *buspb.Envelope) {
			hb := env.GetHeartbeat()
			if hb == nil || hb.Id != "test-proxy" {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range hb.Activity {
				if a.Tenant == "acme" && a.Index == uint32(db.Index) {
					writes += a.Writes
					reads += a.Reads
				}
			}
		},
	})
	e.waitFor("the test's subscriber", func() bool {
		n, err := e.store.BusSubscribers(e.ctx)
		return err == nil && n > subs
	})
	for i := 0; i < 3; i++ {
		c.Set(e.ctx, "k", "v", 0)
	}
	c.Get(e.ctx, "k")
	e.waitFor("activity reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return writes == 3 && reads == 1
	})
	// The heartbeat says when the proxy last heard from each backend, for
	// the keepers' failover decisions.
	e.waitFor("backend replies reported", func() bool {
		ms, err := e.store.LiveMembers(e.ctx, metadb.KindProxy)
		return err == nil && len(ms) == 1 && !ms[0].BackendOK[e.master.Addr].IsZero()
	})
}

// TestRetireGroups: backend connections of a slot no route names any more
// are closed after a minute; those in use stay.
func TestRetireGroups(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	if err := c.Set(e.ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	stale := e.p.group(e.master.Addr, 15, e.p.cfg.TenantUser)
	r := &request{raw: appendCommandStr(nil, "PING"), w: newWaiter()}
	r.w.add()
	stale.send(0, r)
	r.w.wait()
	if string(r.reply) != "+PONG\r\n" {
		t.Fatalf("stale group: %q", r.reply)
	}
	now := time.Now()
	e.p.retireGroups(now)
	e.p.retireGroups(now.Add(2 * time.Minute))
	if !stale.retired.Load() {
		t.Fatal("unused group not retired")
	}
	if d := e.p.snap.Load().dbs[dbKey{"acme", uint32(db.Index)}]; d.master.retired.Load() {
		t.Fatal("group in use retired")
	}
	if err := c.Get(e.ctx, "k").Err(); err != nil {
		t.Fatal(err)
	}
}

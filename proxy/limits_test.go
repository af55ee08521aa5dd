package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestBucket drives the token bucket with an injected clock: a client that
// tries far more often than the rate gets the burst, then the rate.
func TestBucket(t *testing.T) {
	tests := []struct {
		name   string
		rate   int64
		burst  time.Duration
		idle   time.Duration // before the flood: a full bucket stays full
		window time.Duration
		every  time.Duration // the clock's step
		tries  int           // attempts per step; 0: 1
		want   int64         // admitted over the window
	}{
		{name: "coarse 10ms clock, 50ms burst", rate: 1000, burst: 50 * time.Millisecond, window: 10 * time.Second, every: 10 * time.Millisecond, tries: 100, want: 50 + 9990}, // the last step's refill falls past the window
		{name: "coarse 10ms clock, 1/s", rate: 1, burst: time.Second, window: 10 * time.Second, every: 10 * time.Millisecond, tries: 100, want: 1 + 10},
		{name: "100/s for 10s", rate: 100, burst: time.Second, window: 10 * time.Second, every: time.Millisecond, want: 100 + 1000},
		{name: "idle does not grow the burst", rate: 100, burst: time.Second, idle: time.Minute, window: 10 * time.Second, every: time.Millisecond, want: 100 + 1000},
		{name: "small burst", rate: 1000, burst: 10 * time.Millisecond, window: time.Second, every: 100 * time.Microsecond, want: 10 + 1000},
		{name: "1/s burst at least one", rate: 1, burst: time.Millisecond, window: 10 * time.Second, every: 10 * time.Millisecond, want: 1 + 10},
		{name: "slower than the rate: all", rate: 100, burst: time.Second, window: 10 * time.Second, every: 20 * time.Millisecond, want: 500},
		{name: "uneven rate", rate: 3, burst: time.Second, window: 9 * time.Second, every: time.Millisecond, want: 3 + 27},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := int64(1_700_000_000) * int64(time.Second)
			b := newBucket(tc.rate, tc.burst, start)
			now := start + int64(tc.idle)
			end := now + int64(tc.window)
			var got int64
			for ; now < end; now += int64(tc.every) {
				for i := 0; i < max(tc.tries, 1); i++ {
					if b.take(now) {
						got++
					}
				}
			}
			// One token of slack either way: where the window's edges
			// fall between refills.
			if got < tc.want-1 || got > tc.want+1 {
				t.Errorf("admitted %d, want %d ± 1", got, tc.want)
			}
		})
	}
	if b := newBucket(5, time.Second, 0); b.limit() != 5 || (*bucket)(nil).limit() != 0 {
		t.Errorf("limit: got %d and %d, want 5 and 0", b.limit(), (*bucket)(nil).limit())
	}
	if got := respError(newBucket(7, time.Second, 0).err); got != "ERR rate limit exceeded for this db: 7 ops/s (try again later)" {
		t.Errorf("refusal: got %q", got)
	}
}

func TestBucketAllocs(t *testing.T) {
	b := newBucket(1_000_000, time.Second, 0)
	now := int64(0)
	if n := testing.AllocsPerRun(1000, func() { now += 1000; b.take(now) }); n != 0 {
		t.Errorf("take allocates %v times, want 0", n)
	}
}

// BenchmarkBucketTake is the limit's cost per command, as admitRate pays
// it: the coarse clock and the bucket.
func BenchmarkBucketTake(b *testing.B) {
	bk := newBucket(1_000_000_000, time.Second, coarseNow())
	for b.Loop() {
		bk.take(coarseNow())
	}
}

// setLimits sets a tenant's limits as the API does and waits until the
// proxy has them.
func (e *testEnv) setLimits(tenant string, l metadb.Limits) {
	e.t.Helper()
	if _, err := e.store.SetLimits(e.ctx, "test", tenant, l); err != nil {
		e.t.Fatal(err)
	}
	e.waitLimits(tenant, l)
}

func (e *testEnv) waitLimits(tenant string, l metadb.Limits) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("limits %+v of %s", l, tenant), func() bool {
		ti := e.p.snap.Load().tenants[tenant]
		return ti != nil && ti.set == l
	})
}

// authRaw opens a raw connection and authenticates it as tenant.
func (e *testEnv) authRaw(tenant, pass string) (*rawConn, string) {
	e.t.Helper()
	r := e.raw()
	return r, r.do("AUTH", tenant, pass)
}

// gauge reads one metric of the proxy by name and labels.
func (e *testEnv) metric(name string, labels ...string) float64 {
	e.t.Helper()
	fams, err := e.p.metrics.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matchLabels(m, labels) {
				if m.Counter != nil {
					return m.Counter.GetValue()
				}
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

func matchLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

var _ prometheus.Collector = (*tenantCollector)(nil)

// TestConnectionLimit: the tenant's N+1th connection gets Redis's maxclients
// error and is closed, another tenant connects, and a place freed is taken.
func TestConnectionLimit(t *testing.T) {
	e := newEnv(t)
	passA, passB := e.tenant("conn-a"), e.tenant("conn-b")
	e.db("conn-a", metadb.WriteAsync)
	e.setLimits("conn-a", metadb.Limits{MaxConnections: 3})

	var conns []*rawConn
	for i := 0; i < 3; i++ {
		r, got := e.authRaw("conn-a", passA)
		if got != "+OK" {
			t.Fatalf("AUTH %d: got %q, want +OK", i+1, got)
		}
		conns = append(conns, r)
	}
	over, got := e.authRaw("conn-a", passA)
	if got != "-ERR max number of clients reached" {
		t.Errorf("4th AUTH: got %q, want -ERR max number of clients reached", got)
	}
	if !over.closed() {
		t.Error("4th connection was not closed")
	}
	// HELLO AUTH counts the same way.
	hello := e.raw()
	if got := hello.do("HELLO", "2", "AUTH", "conn-a", passA); got != "-ERR max number of clients reached" {
		t.Errorf("HELLO AUTH over the limit: got %q", got)
	}
	// Re-authenticating a counted connection as the same tenant is no new one.
	if got := conns[0].do("AUTH", "conn-a", passA); got != "+OK" {
		t.Errorf("AUTH again on a counted connection: got %q, want +OK", got)
	}
	// Another tenant is not affected.
	for i := 0; i < 5; i++ {
		if _, got := e.authRaw("conn-b", passB); got != "+OK" {
			t.Fatalf("tenant b AUTH %d: got %q, want +OK", i+1, got)
		}
	}
	if got := e.metric("granary_proxy_tenant_connections", "tenant", "conn-a"); got != 3 {
		t.Errorf("tenant a connections metric: got %v, want 3", got)
	}
	if got := e.metric("granary_proxy_tenant_refusals_total", "tenant", "conn-a", "reason", "connections"); got != 2 {
		t.Errorf("tenant a refused connections: got %v, want 2", got)
	}
	if got := e.metric("granary_proxy_tenant_max_connections", "tenant", "conn-a"); got != 3 {
		t.Errorf("tenant a max connections metric: got %v, want 3", got)
	}
	// A connection that leaves (or RESETs) frees its place.
	conns[0].nc.Close()
	if got := conns[1].do("RESET"); got != "+RESET" {
		t.Fatalf("RESET: got %q", got)
	}
	e.waitFor("a's count to drop", func() bool { return e.p.tenantState("conn-a").conns.Load() == 1 })
	for i := 0; i < 2; i++ {
		if _, got := e.authRaw("conn-a", passA); got != "+OK" {
			t.Errorf("AUTH after a place was freed: got %q, want +OK", got)
		}
	}
	if _, got := e.authRaw("conn-a", passA); !strings.HasPrefix(got, "-ERR max number") {
		t.Errorf("AUTH over the limit again: got %q", got)
	}
	// Raising the limit (0: the default, 1000) lets more in.
	e.setLimits("conn-a", metadb.Limits{})
	if _, got := e.authRaw("conn-a", passA); got != "+OK" {
		t.Errorf("AUTH under the default limit: got %q, want +OK", got)
	}
}

// TestLimitsReload: a limits change whose bus message was lost reaches the
// proxy with the reload that the next message's version gap causes.
func TestLimitsReload(t *testing.T) {
	e := newEnv(t)
	e.tenant("reload-a")
	db := e.db("reload-a", metadb.WriteAsync)
	e.setLimits("reload-a", metadb.Limits{OpsPerSec: 500}) // through the bus
	if r := e.p.snap.Load().dbs[dbKey{"reload-a", uint32(db.Index)}]; r.rate.limit() != 500 {
		t.Fatalf("route's limit after the bus message: got %d, want 500", r.rate.limit())
	}
	resyncs := e.metric("granary_proxy_resyncs_total")

	// The record changes and the version moves on, but the message is lost.
	want := metadb.Limits{MaxConnections: 7, OpsPerSec: 900}
	if _, err := e.store.UpdateTenant(e.ctx, "test", "reload-a", func(tn *metadb.Tenant) ([]*buspb.Envelope, error) {
		tn.Limits = want
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Announce(e.ctx, nil, "test"); err != nil { // a version, no message
		t.Fatal(err)
	}
	if got := e.p.snap.Load().tenants["reload-a"].set; got == want {
		t.Fatal("the proxy has the limits before any message")
	}
	// The next message shows the gap.
	if _, err := e.store.Announce(e.ctx, nil, "test", &buspb.Envelope{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{Tenant: "nobody", Index: 0}}}); err != nil {
		t.Fatal(err)
	}
	e.waitLimits("reload-a", want)
	if got := e.metric("granary_proxy_resyncs_total"); got <= resyncs {
		t.Errorf("resyncs: got %v, want > %v", got, resyncs)
	}
	ti := e.p.snap.Load().tenants["reload-a"]
	if ti.maxConns != 7 || ti.ops != 900 {
		t.Errorf("effective limits: got %d conns %d ops/s, want 7 and 900", ti.maxConns, ti.ops)
	}
	if r := e.p.snap.Load().dbs[dbKey{"reload-a", uint32(db.Index)}]; r.rate.limit() != 900 {
		t.Errorf("route's limit after the reload: got %d, want 900", r.rate.limit())
	}
}

// TestRateLimit: a db over its ops/s gets the refusal, its other commands
// pass within the rate, and another tenant's db is not limited.
func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	passA, passB := e.tenant("rate-a"), e.tenant("rate-b")
	dbA, dbB := e.db("rate-a", metadb.WriteAsync), e.db("rate-b", metadb.WriteAsync)
	const rate = 50
	e.setLimits("rate-a", metadb.Limits{OpsPerSec: rate})
	a, b := e.client("rate-a", passA, dbA.Index), e.client("rate-b", passB, dbB.Index)

	send := func(name string, n int) (ok int, refused int, took time.Duration) {
		t0 := time.Now()
		cl := a
		if name == "b" {
			cl = b
		}
		pl := cl.Pipeline()
		for i := 0; i < n; i++ {
			pl.Set(e.ctx, fmt.Sprintf("k%d", i), "v", 0)
		}
		cmds, _ := pl.Exec(e.ctx)
		for _, c := range cmds {
			switch err := c.Err(); {
			case err == nil:
				ok++
			case err.Error() == fmt.Sprintf("ERR rate limit exceeded for this db: %d ops/s (try again later)", rate):
				refused++
			default:
				t.Fatalf("%s: unexpected error %v", name, err)
			}
		}
		return ok, refused, time.Since(t0)
	}
	ok, refused, took := send("a", 500)
	// The burst (one second's worth), plus what refilled meanwhile.
	if max := rate + int(took.Seconds()*rate) + 2; ok < rate || ok > max || refused != 500-ok {
		t.Errorf("tenant a: %d ok, %d refused in %v, want %d..%d ok, the rest refused", ok, refused, took, rate, max)
	}
	if ok, refused, _ := send("b", 500); ok != 500 || refused != 0 {
		t.Errorf("tenant b: %d ok, %d refused, want all 500 ok", ok, refused)
	}
	if got := e.metric("granary_proxy_tenant_refusals_total", "tenant", "rate-a", "reason", "rate"); got != float64(refused) {
		t.Errorf("refusals metric: got %v, want %d", got, refused)
	}
	if got := e.metric("granary_proxy_tenant_ops_per_sec_limit", "tenant", "rate-a"); got != rate {
		t.Errorf("ops limit metric: got %v, want %d", got, rate)
	}
	// Refused inside MULTI: the transaction is discarded, as after any
	// command refused while queueing.
	r := e.raw()
	r.do("AUTH", "rate-a", passA)
	r.do("SELECT", fmt.Sprint(dbA.Index))
	e.setLimits("rate-a", metadb.Limits{OpsPerSec: 1})
	// spend spends the bucket's token, right before each check, so that a
	// stall of the loaded machine that refills one does not fail the test.
	spend := func() {
		for i := 0; i < 5 && !strings.HasPrefix(r.do("GET", "x"), "-ERR rate limit"); i++ {
		}
	}
	// The proxy's own commands that reach the db take tokens too; the
	// connection's own do not.
	spend()
	if got := r.do("EVAL", "return 1", "0"); !strings.HasPrefix(got, "-ERR rate limit exceeded") {
		t.Errorf("EVAL over the rate: got %q", got)
	}
	spend()
	if got := r.do("PUBLISH", "ch", "m"); !strings.HasPrefix(got, "-ERR rate limit exceeded") {
		t.Errorf("PUBLISH over the rate: got %q", got)
	}
	if got := r.do("PING"); got != "+PONG" {
		t.Errorf("PING over the rate: got %q, want +PONG", got)
	}
	spend()
	r.do("MULTI")
	if got := r.do("SET", "x", "1"); !strings.HasPrefix(got, "-ERR rate limit exceeded") {
		t.Errorf("SET in MULTI over the rate: got %q", got)
	}
	if got := r.do("EXEC"); !strings.HasPrefix(got, "-EXECABORT") {
		t.Errorf("EXEC: got %q, want -EXECABORT", got)
	}
	// No limit again: nothing refused.
	e.setLimits("rate-a", metadb.Limits{})
	if ok, refused, _ := send("a", 500); ok != 500 || refused != 0 {
		t.Errorf("tenant a without a limit: %d ok, %d refused", ok, refused)
	}
}

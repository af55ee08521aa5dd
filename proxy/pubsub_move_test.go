package proxy

import (
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// holdTo announces a resize hold on the db that names target/db as the
// switch's destination, as the master's hold step does, and returns its
// version.
func (e *testEnv) holdTo(index int, target string, targetDB int, deadline time.Time) uint64 {
	e.t.Helper()
	v, err := e.store.Announce(e.ctx, nil, "test", &buspb.Envelope{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{
		Tenant: "acme", Index: uint32(index), Hold: true, Job: "resize-1", DeadlineUnixNanos: deadline.UnixNano(),
		TargetMaster: target, TargetDb: uint32(targetDB)}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// numsub counts the subscribers of a tenant db's channel on a server, as
// Redis sees it (the backend name has the db's prefix).
func numsub(t *testing.T, s *redistest.Server, channel string) int64 {
	t.Helper()
	m, err := s.Client(t).PubSubNumSub(t.Context(), "acme/0:"+channel).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m["acme/0:"+channel]
}

func numpat(t *testing.T, s *redistest.Server) int64 {
	t.Helper()
	n, err := s.Client(t).PubSubNumPat(t.Context()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSubscriberFollowsResize: a hold that names its target leads to the
// subscriber's channels and patterns being subscribed there before the
// proxy acknowledges the hold's version; PUBLISH is held with the writes;
// at the switch the subscriber gets, in order and once each, what was
// published before the hold and what was held, and its old connection is
// closed; a SUBSCRIBE during the hold is in place on both servers.
func TestSubscriberFollowsResize(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	target := redistest.Start(t)
	const targetDB = 3
	sub := e.raw()
	sub.do("AUTH", "acme", pass)
	sub.send(string(appendCommandStr(nil, "SUBSCRIBE", "a")))
	if got := sub.reply(); got != "[subscribe a :1]" {
		t.Fatalf("subscribe: %q", got)
	}
	if got := sub.do("PSUBSCRIBE", "n*"); got != "[psubscribe n* :2]" {
		t.Fatalf("psubscribe: %q", got)
	}
	pub := e.client("acme", pass, db.Index)
	if n := pub.Publish(e.ctx, "a", "m0").Val(); n != 1 {
		t.Fatalf("publish before the hold reached %d", n)
	}
	if got := sub.reply(); got != "[message a m0]" {
		t.Fatalf("subscriber got %q", got)
	}

	v := e.holdTo(db.Index, target.Addr, targetDB, time.Now().Add(10*time.Second))
	e.waitFor("the hold acknowledged", func() bool { return e.p.applied.Load() >= v })
	// Checked at the first sight of the acknowledgement: it must not come
	// before the subscription on the target.
	if n := numsub(t, target, "a"); n != 1 {
		t.Fatalf("at the hold's acknowledgement the target has %d subscribers of the channel, want 1", n)
	}
	if n := numpat(t, target); n != 1 {
		t.Fatalf("at the hold's acknowledgement the target has %d patterns, want 1", n)
	}

	// A SUBSCRIBE during the hold reaches both servers before it is
	// confirmed.
	if got := sub.do("SUBSCRIBE", "b"); got != "[subscribe b :3]" {
		t.Fatalf("subscribe during the hold: %q", got)
	}
	if n := numsub(t, target, "b"); n != 1 {
		t.Fatalf("a SUBSCRIBE during the hold: %d subscribers on the target", n)
	}
	if n := numsub(t, e.master, "b"); n != 1 {
		t.Fatalf("a SUBSCRIBE during the hold: %d subscribers on the current master", n)
	}

	// A client that enters subscribed mode during the hold is subscribed
	// on both servers before it is confirmed.
	sub2 := e.raw()
	sub2.do("AUTH", "acme", pass)
	if got := sub2.do("SUBSCRIBE", "c"); got != "[subscribe c :1]" {
		t.Fatalf("second subscriber: %q", got)
	}
	if a, b := numsub(t, target, "c"), numsub(t, e.master, "c"); a != 1 || b != 1 {
		t.Fatalf("a client subscribed during the hold: %d on the target, %d on the master, want 1 and 1", a, b)
	}

	// A message on the target before this proxy applies the switch (another
	// proxy switched first) waits until the old connection has delivered
	// everything, then comes first.
	if n := target.Client(t).Publish(e.ctx, "acme/0:a", "t1").Val(); n != 1 {
		t.Fatalf("the target has %d subscribers of a, want 1", n)
	}
	if got := sub.do("PING", "y"); got != "[pong y]" {
		t.Fatalf("before the switch the subscriber got %q, want only the PING's answer", got)
	}

	// PUBLISH waits in the hold.
	st := e.p.dbState(dbKey{"acme", uint32(db.Index)})
	held := make(chan int64, 2)
	go func() { held <- pub.Publish(e.ctx, "a", "m1").Val() }()
	e.waitFor("the publish held", func() bool { return st.held.Load() > 0 })
	select {
	case n := <-held:
		t.Fatalf("a publish returned during the hold (%d receivers)", n)
	default:
	}

	// The switch: the route names the target, then the hold ends.
	r := proto.Clone(metadb.RouteOf(db, e.pair)).(*buspb.Route)
	r.Master, r.Replica, r.Db, r.Pair = target.Addr, "", targetDB, "p-target"
	if _, err := e.store.Announce(e.ctx, nil, "test",
		&buspb.Envelope{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: r}}},
		&buspb.Envelope{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{Tenant: "acme", Index: uint32(db.Index), Hold: false, Job: "resize-1"}}},
	); err != nil {
		t.Fatal(err)
	}
	if n := <-held; n != 1 {
		t.Fatalf("the held publish reached %d subscribers on the new master, want 1", n)
	}
	if n := pub.Publish(e.ctx, "news", "m2").Val(); n != 1 {
		t.Fatalf("publish after the switch reached %d", n)
	}
	for _, want := range []string{"[message a t1]", "[message a m1]", "[pmessage n* news m2]"} {
		if got := sub.reply(); got != want {
			t.Fatalf("subscriber got %q, want %q", got, want)
		}
	}
	if n := pub.Publish(e.ctx, "c", "m3").Val(); n != 1 {
		t.Fatalf("publish to the second subscriber after the switch reached %d", n)
	}
	if got := sub2.reply(); got != "[message c m3]" {
		t.Fatalf("second subscriber got %q", got)
	}
	if got := sub.do("PING", "x"); got != "[pong x]" {
		t.Fatalf("after the switch, PING got %q (a duplicate or a stray reply?)", got)
	}
	e.waitFor("the old connection closed", func() bool { return numsub(t, e.master, "a") == 0 && numsub(t, e.master, "b") == 0 })
	if got := counterValue(e.p.metrics.psFollowed); got != 2 {
		t.Errorf("followed = %v, want 2", got)
	}
	// Subscriptions keep working on the new leg.
	if got := sub.do("UNSUBSCRIBE", "b"); got != "[unsubscribe b :2]" {
		t.Fatalf("unsubscribe after the switch: %q", got)
	}
	if n := numsub(t, target, "b"); n != 0 {
		t.Fatalf("after UNSUBSCRIBE the target still has %d subscribers of b", n)
	}
}

// TestStandbyLegClosed: a hold released without a switch (an aborted
// resize), and a hold that lapses, close the subscriber's connection on
// the target; the subscriber keeps its subscription on the master.
func TestStandbyLegClosed(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	target := redistest.Start(t)
	sub := e.raw()
	sub.do("AUTH", "acme", pass)
	if got := sub.do("SUBSCRIBE", "a"); got != "[subscribe a :1]" {
		t.Fatalf("subscribe: %q", got)
	}

	v := e.holdTo(db.Index, target.Addr, 2, time.Now().Add(10*time.Second))
	e.waitFor("the hold acknowledged", func() bool { return e.p.applied.Load() >= v })
	if n := numsub(t, target, "a"); n != 1 {
		t.Fatalf("target subscribers at the ack: %d", n)
	}
	e.hold("acme", db.Index, false, time.Time{})
	e.waitFor("the standby connection closed after the release", func() bool { return numsub(t, target, "a") == 0 })

	v = e.holdTo(db.Index, target.Addr, 2, time.Now().Add(500*time.Millisecond))
	e.waitFor("the second hold acknowledged", func() bool { return e.p.applied.Load() >= v })
	if n := numsub(t, target, "a"); n != 1 {
		t.Fatalf("target subscribers at the second ack: %d", n)
	}
	e.waitFor("the standby connection closed after the lapse", func() bool { return numsub(t, target, "a") == 0 })
	// After a lapse writes (and publishes) are refused until the route
	// changes: the master holds again, switches, or releases.
	e.hold("acme", db.Index, false, time.Time{})

	pub := e.client("acme", pass, db.Index)
	if n := pub.Publish(e.ctx, "a", "still").Val(); n != 1 {
		t.Fatalf("publish after the lapse reached %d", n)
	}
	if got := sub.reply(); got != "[message a still]" {
		t.Fatalf("subscriber got %q", got)
	}
	if got := counterValue(e.p.metrics.psMoved.WithLabelValues("move")); got != 0 {
		t.Errorf("moved{move} = %v, want 0", got)
	}
}

// TestSubscriberToldOnFailover: a master change that was not prepared (a
// failover) ends the subscribed connection after an error that says to
// resubscribe, and counts it.
func TestSubscriberToldOnFailover(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteAsync)
	sub := e.raw()
	sub.do("AUTH", "acme", pass)
	if got := sub.do("SUBSCRIBE", "a"); got != "[subscribe a :1]" {
		t.Fatalf("subscribe: %q", got)
	}
	ctx := e.ctx
	if err := e.replica.Client(t).Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
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
	if got := sub.reply(); got != "-ERR "+ErrSubFailover.Error() {
		t.Fatalf("subscriber got %q, want the failover error", got)
	}
	if !sub.closed() {
		t.Fatal("the subscribed connection stayed open after the failover")
	}
	if got := counterValue(e.p.metrics.psMoved.WithLabelValues("failover")); got != 1 {
		t.Errorf("moved{failover} = %v, want 1", got)
	}
	e.waitFor("the old master's subscription closed", func() bool { return numsub(t, e.master, "a") == 0 })
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

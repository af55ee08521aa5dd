package metadb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// recorder is a bus subscriber that keeps what it was told. Its Resync
// calls load, which rebuilds its state from metadb.
type recorder struct {
	mu      sync.Mutex
	handled []*buspb.Envelope
	resyncs []uint64
	errs    []error
	load    func(ctx context.Context) (uint64, error)
}

func (r *recorder) subscriber() Subscriber {
	return Subscriber{
		Handle: func(ctx context.Context, env *buspb.Envelope) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.handled = append(r.handled, env)
		},
		Resync: func(ctx context.Context) (uint64, error) {
			v, err := r.load(ctx)
			if err == nil {
				r.mu.Lock()
				r.resyncs = append(r.resyncs, v)
				r.mu.Unlock()
			}
			return v, err
		},
		OnError: func(err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.errs = append(r.errs, err)
		},
	}
}

func (r *recorder) snapshot() (handled []*buspb.Envelope, resyncs []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*buspb.Envelope(nil), r.handled...), append([]uint64(nil), r.resyncs...)
}

func (r *recorder) versions() []uint64 {
	h, _ := r.snapshot()
	out := make([]uint64, len(h))
	for i, e := range h {
		out[i] = e.Version
	}
	return out
}

// subscribe runs s.Subscribe for r until the test ends and waits for the
// first resync, which shows the subscription is live.
func subscribe(t *testing.T, s *Store, r *recorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, r.subscriber()) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Subscribe returned %v, want nil at cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Subscribe still running 5s after its context ended")
		}
	})
	redistest.WaitFor(t, 5*time.Second, "the first resync", func() bool {
		_, rs := r.snapshot()
		return len(rs) >= 1
	})
}

func versionLoader(s *Store) func(ctx context.Context) (uint64, error) {
	return s.Version
}

func banMsg(tenant string, index int) *buspb.Envelope {
	return &buspb.Envelope{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{Tenant: tenant, Index: uint32(index), Banned: true}}}
}

// TestBusOrder: the messages of UpdateDB and Announce, and plain
// notifications, arrive in order, topology ones with consecutive versions
// and the sender's name, and no resync is needed.
func TestBusOrder(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 4)
	mustTenant(t, s, "acme")
	db := mustActiveDB(t, s, "acme", pair, "c0")
	r := &recorder{load: versionLoader(s)}
	subscribe(t, s, r)
	v0, _ := s.Version(ctx)

	if _, err := s.UpdateDB(ctx, nil, "m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.Banned = true
		return []*buspb.Envelope{banMsg("acme", db.Index), {Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: RouteOf(d, pair)}}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	next, err := s.Announce(ctx, nil, "m2", banMsg("acme", 1), banMsg("acme", 2), banMsg("acme", 3))
	if err != nil {
		t.Fatal(err)
	}
	if next != v0+5 {
		t.Errorf("Announce returned version %d, want %d", next, v0+5)
	}
	if err := s.Publish(ctx, "k1", &buspb.Envelope{Version: 99, Payload: &buspb.Envelope_Heartbeat{Heartbeat: &buspb.Heartbeat{}}}); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "6 messages", func() bool { return len(r.versions()) >= 6 })

	handled, resyncs := r.snapshot()
	want := []struct {
		version uint64
		sender  string
		kind    string
	}{
		{v0 + 1, "m1", "*buspb.Envelope_WriteBan"},
		{v0 + 2, "m1", "*buspb.Envelope_RouteChanged"},
		{v0 + 3, "m2", "*buspb.Envelope_WriteBan"},
		{v0 + 4, "m2", "*buspb.Envelope_WriteBan"},
		{v0 + 5, "m2", "*buspb.Envelope_WriteBan"},
		{0, "k1", "*buspb.Envelope_Heartbeat"},
	}
	if len(handled) != len(want) {
		t.Fatalf("handled %d messages, want %d", len(handled), len(want))
	}
	for i, w := range want {
		e := handled[i]
		if got := fmt.Sprintf("%d %s %T", e.Version, e.Sender, e.Payload); got != fmt.Sprintf("%d %s %s", w.version, w.sender, w.kind) {
			t.Errorf("message %d: got %s, want %d %s %s", i, got, w.version, w.sender, w.kind)
		}
	}
	if rc := handled[1].GetRouteChanged(); rc == nil || !rc.Route.Banned || rc.Route.Db != uint32(db.SlotDB) {
		t.Errorf("route message: got %v, want the banned route of slot %d", rc, db.SlotDB)
	}
	if got, _ := s.Version(ctx); got != v0+5 {
		t.Errorf("version after the notification: got %d, want %d", got, v0+5)
	}
	if len(resyncs) != 1 {
		t.Errorf("resyncs: got %v, want only the first one", resyncs)
	}
}

// TestBusConcurrentWriters: topology changes racing from several writers
// still reach a subscriber as one gap-free, ordered stream.
func TestBusConcurrentWriters(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	r := &recorder{load: versionLoader(s)}
	subscribe(t, s, r)
	v0, _ := s.Version(ctx)

	// Each writer commits 25 times: a writer's transaction can lose only to
	// another writer's commit, so 75 losses at most, below txn's 100 tries.
	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := s.Announce(ctx, nil, fmt.Sprintf("w%d", w), banMsg("acme", i)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Announce: %v", err)
	}
	redistest.WaitFor(t, 5*time.Second, "all messages", func() bool { return len(r.versions()) >= writers*each })
	got := r.versions()
	for i, v := range got {
		if v != v0+uint64(i)+1 {
			t.Fatalf("message %d has version %d, want %d (got %v)", i, v, v0+uint64(i)+1, got)
		}
	}
	if _, rs := r.snapshot(); len(rs) != 1 {
		t.Errorf("resyncs: got %v, want only the first one", rs)
	}
}

// TestBusGap: a version bump whose message the subscriber never sees (an
// Announce with no messages publishes nothing) shows up as a gap at the next
// message, which triggers a resync instead of being applied; delivery then
// resumes from the resynced version.
func TestBusGap(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	r := &recorder{load: versionLoader(s)}
	subscribe(t, s, r)
	v0, _ := s.Version(ctx)

	if _, err := s.Announce(ctx, nil, "m1"); err != nil { // v0+1, unseen
		t.Fatal(err)
	}
	if _, err := s.Announce(ctx, nil, "m1", banMsg("acme", 0)); err != nil { // v0+2: a gap
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "a resync after the gap", func() bool {
		_, rs := r.snapshot()
		return len(rs) >= 2
	})
	if _, err := s.Announce(ctx, nil, "m1", banMsg("acme", 1)); err != nil { // v0+3: next after the resync
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the message after the resync", func() bool { return len(r.versions()) >= 1 })

	handled, resyncs := r.snapshot()
	if fmt.Sprint(resyncs) != fmt.Sprint([]uint64{v0, v0 + 2}) {
		t.Errorf("resyncs: got %v, want %v", resyncs, []uint64{v0, v0 + 2})
	}
	if len(handled) != 1 || handled[0].Version != v0+3 || handled[0].GetWriteBan().GetIndex() != 1 {
		t.Errorf("handled: got %v, want only version %d (index 1)", handled, v0+3)
	}
}

// TestBusReconnect drops the subscriber's connection, changes the topology
// and checks that the subscriber's state, kept by Resync and Handle, has
// the change within a deadline. With "reconnect refused" the subscriber's
// ACL user is disabled until the change is made, so the change's message is
// certainly lost and only the resync after the reconnect can bring it.
func TestBusReconnect(t *testing.T) {
	tests := []struct {
		name string
		hold bool
	}{
		{name: "reconnect refused while the change is made", hold: true},
		{name: "change right after the kill", hold: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, srv := newStore(t)
			ctx := testCtx(t)
			admin := s.Client()
			if err := admin.Do(ctx, "ACL", "SETUSER", "sub", "on", ">subpw", "~*", "&*", "+@all").Err(); err != nil {
				t.Fatal(err)
			}
			sub := openStore(t, Config{URL: "redis://sub:subpw@" + srv.Addr})
			pair := addPair(t, s, "64M", 4)
			mustTenant(t, s, "acme")
			mustActiveDB(t, s, "acme", pair, "c0")

			// The subscriber's state: the routes it would serve.
			var mu sync.Mutex
			routes := map[string]*buspb.Route{}
			key := func(r *buspb.Route) string { return fmt.Sprintf("%s/%d", r.Tenant, r.Index) }
			r := &recorder{load: func(ctx context.Context) (uint64, error) {
				v, rs, err := s.Routes(ctx)
				if err != nil {
					return 0, err
				}
				mu.Lock()
				defer mu.Unlock()
				routes = map[string]*buspb.Route{}
				for _, rt := range rs {
					routes[key(rt)] = rt
				}
				return v, nil
			}}
			subscriber := r.subscriber()
			handle := subscriber.Handle
			subscriber.Handle = func(ctx context.Context, env *buspb.Envelope) {
				if rc := env.GetRouteChanged(); rc != nil {
					mu.Lock()
					if rc.Removed {
						delete(routes, key(rc.Route))
					} else {
						routes[key(rc.Route)] = rc.Route
					}
					mu.Unlock()
				}
				handle(ctx, env)
			}
			hasRoute := func(k string) bool {
				mu.Lock()
				defer mu.Unlock()
				return routes[k] != nil
			}
			subCtx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sub.Subscribe(subCtx, subscriber) }()
			t.Cleanup(func() {
				cancel()
				select {
				case <-done:
				case <-time.After(5 * time.Second):
					t.Errorf("Subscribe still running 5s after its context ended")
				}
			})
			redistest.WaitFor(t, 5*time.Second, "the first resync", func() bool { _, rs := r.snapshot(); return len(rs) == 1 })
			if !hasRoute("acme/0") {
				t.Fatalf("routes after the first resync: got %v, want acme/0", routes)
			}

			if tc.hold {
				if err := admin.Do(ctx, "ACL", "SETUSER", "sub", "off").Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatalf("CLIENT KILL TYPE pubsub: %v", err)
			}
			if tc.hold {
				redistest.WaitFor(t, 5*time.Second, "the bus to have no subscriber", func() bool {
					n, err := admin.PubSubNumSub(ctx, keyBus).Result()
					return err == nil && n[keyBus] == 0
				})
			}

			// The change: a new db goes live, announced with its route.
			db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.UpdateDB(ctx, nil, "m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
				d.State = DBActive
				return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: RouteOf(d, pair)}}}}, nil
			}); err != nil {
				t.Fatal(err)
			}
			changeVersion, _ := s.Version(ctx)
			if tc.hold {
				if err := admin.Do(ctx, "ACL", "SETUSER", "sub", "on").Err(); err != nil {
					t.Fatal(err)
				}
			}

			want := fmt.Sprintf("acme/%d", db.Index)
			redistest.WaitFor(t, 10*time.Second, "the subscriber to know route "+want, func() bool { return hasRoute(want) })
			redistest.WaitFor(t, 5*time.Second, "a resync after the reconnect", func() bool { _, rs := r.snapshot(); return len(rs) >= 2 })
			if tc.hold {
				for _, v := range r.versions() {
					if v == changeVersion {
						t.Errorf("the change's message (version %d) was delivered, want it lost while disconnected", v)
					}
				}
				if _, rs := r.snapshot(); rs[len(rs)-1] < changeVersion {
					t.Errorf("last resync at version %d, want at least %d", rs[len(rs)-1], changeVersion)
				}
			}

			// Delivery goes on after the reconnect.
			next, err := s.Announce(ctx, nil, "m1", banMsg("acme", 0))
			if err != nil {
				t.Fatal(err)
			}
			redistest.WaitFor(t, 5*time.Second, fmt.Sprintf("version %d to be handled", next), func() bool {
				vs := r.versions()
				return len(vs) > 0 && vs[len(vs)-1] == next
			})
		})
	}
}

// TestSubscribeStops: Subscribe returns soon after its context ends, also
// on a quiet bus where no message would wake it up, and its keep-alive has
// ended by then.
func TestSubscribeStops(t *testing.T) {
	s, _ := newStore(t)
	r := &recorder{load: versionLoader(s)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	before := keepAlives()
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, r.subscriber()) }()
	redistest.WaitFor(t, 5*time.Second, "the first resync", func() bool { _, rs := r.snapshot(); return len(rs) == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Subscribe: got %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatalf("Subscribe still running 2s after its context ended")
	}
	if n := keepAlives(); n > before {
		t.Errorf("bus keep-alives after Subscribe returned: got %d, want at most %d", n, before)
	}
}

// keepAlives counts the goroutines in busKeepAlive. A test compares the
// count before its Subscribe with the count after it returned: a Subscribe
// of an earlier test may still be ending, never starting.
func keepAlives() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			count := 0
			for _, g := range bytes.Split(buf[:n], []byte("\n\n")) {
				if bytes.Contains(g, []byte("metadb.busKeepAlive(")) {
					count++
				}
			}
			return count
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestSubscribeStoreClosed: a Store closed under a running Subscribe can
// never redial, so Subscribe returns that error (it used to retry forever)
// and leaves no goroutine behind.
func TestSubscribeStoreClosed(t *testing.T) {
	srv := redistest.Start(t)
	s, err := Open(Config{URL: "redis://" + srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{load: versionLoader(s)}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	before := keepAlives()
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, r.subscriber()) }()
	redistest.WaitFor(t, 5*time.Second, "the first resync", func() bool { _, rs := r.snapshot(); return len(rs) == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, redis.ErrClosed) {
			t.Errorf("Subscribe: got %v, want %v", err, redis.ErrClosed)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Subscribe still running 5s after its Store was closed")
	}
	if n := keepAlives(); n > before {
		t.Errorf("bus keep-alives after Subscribe returned: got %d, want at most %d", n, before)
	}
}

// TestSubscribeIncomplete: a subscriber without Handle or Resync is an
// error at once, not a panic at the first message.
func TestSubscribeIncomplete(t *testing.T) {
	s, _ := newStore(t)
	resync := func(context.Context) (uint64, error) { return 0, nil }
	handle := func(context.Context, *buspb.Envelope) {}
	for name, sub := range map[string]Subscriber{
		"no handle": {Resync: resync},
		"no resync": {Handle: handle},
	} {
		t.Run(name, func(t *testing.T) {
			if err := s.Subscribe(testCtx(t), sub); err == nil {
				t.Fatalf("Subscribe: got nil, want an error")
			}
		})
	}
}

// TestBusOrderDecision pins what a subscriber does with each message
// version, given the version it has applied: the order half of invariant 2.
func TestBusOrderDecision(t *testing.T) {
	cases := []struct {
		name        string
		applied, v  uint64
		want        busAction
		wantApplied uint64
	}{
		{"next version", 7, 8, busApply, 8},
		{"first version after an empty snapshot", 0, 1, busApply, 1},
		{"notification", 7, 0, busApply, 7},
		{"notification before any topology", 0, 0, busApply, 0},
		{"same version", 7, 7, busStale, 7},
		{"older version", 7, 3, busStale, 7},
		{"gap of one", 7, 9, busReload, 7},
		{"far ahead", 7, 1000, busReload, 7},
		{"gap right after an empty snapshot", 0, 2, busReload, 0},
		{"largest version", ^uint64(0) - 1, ^uint64(0), busApply, ^uint64(0)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			act, applied := busOrder(tc.applied, tc.v)
			if act != tc.want || applied != tc.wantApplied {
				t.Fatalf("busOrder(%d, %d): got %v, %d, want %v, %d", tc.applied, tc.v, act, applied, tc.want, tc.wantApplied)
			}
		})
	}
}

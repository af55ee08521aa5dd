package e2e

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// Pub/sub across moves (README, "Pub/sub across moves"): a subscriber
// through a proxy gets every message published through Granary while its
// db is resized, or, when its db's master dies, is told to resubscribe;
// never a silent gap.

// numSub is a subscriber of channel "nums" that records the numbers it
// receives, and why it stopped.
type numSub struct {
	name string
	mu   sync.Mutex
	got  []int
	err  error // why it stopped receiving; nil while it receives
	done chan struct{}
}

func subscribeNums(t *testing.T, name, addr string, index int) *numSub {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, Username: "acme", Password: "pw", DB: index, MaxRetries: -1})
	ps := rc.Subscribe(t.Context(), "nums")
	if _, err := ps.Receive(t.Context()); err != nil { // the confirmation
		t.Fatalf("%s: subscribe: %v", name, err)
	}
	s := &numSub{name: name, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			// The first error ends it: go-redis would reconnect and
			// resubscribe on the next call, hiding the disconnect.
			m, err := ps.Receive(context.Background())
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			if msg, ok := m.(*redis.Message); ok {
				n, _ := strconv.Atoi(msg.Payload)
				s.mu.Lock()
				s.got = append(s.got, n)
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		ps.Close()
		<-s.done
		rc.Close()
	})
	return s
}

func (s *numSub) state() ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.got...), s.err
}

// numPub publishes 0, 1, 2… on "nums" at rate per second from one
// connection, remembering which publishes succeeded and how many
// subscribers each reached.
type numPub struct {
	mu        sync.Mutex
	ok        []int
	fails     int
	firstErr  error
	receivers map[int64]int // receivers of a successful publish → count
	maxWait   time.Duration
	stop      context.CancelFunc
	done      chan struct{}
}

func publishNums(ctx context.Context, t *testing.T, addr string, index, rate int) *numPub {
	rc := redis.NewClient(&redis.Options{Addr: addr, Username: "acme", Password: "pw", DB: index,
		MaxRetries: -1, PoolSize: 1, ReadTimeout: 10 * time.Second})
	t.Cleanup(func() { rc.Close() })
	ctx, stop := context.WithCancel(ctx)
	p := &numPub{receivers: map[int64]int{}, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := 0; ; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for due := int(time.Since(start).Seconds() * float64(rate)); i < due && ctx.Err() == nil; i++ {
				t0 := time.Now()
				n, err := rc.Publish(ctx, "nums", strconv.Itoa(i)).Result()
				took := time.Since(t0)
				p.mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						p.fails++
						if p.firstErr == nil {
							p.firstErr = err
						}
					}
				} else {
					p.ok = append(p.ok, i)
					p.receivers[n]++
					p.maxWait = max(p.maxWait, took)
				}
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *numPub) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ok)
}

func (p *numPub) halt() []int {
	p.stop()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.ok...)
}

// checkNums fails the test on a silent gap: a subscriber that still
// receives must have every published number; one that was disconnected
// must have been told to resubscribe, and have every number published
// before the last one it got. Duplicates and reordering fail too.
// It reports whether the subscriber was disconnected.
func checkNums(t *testing.T, s *numSub, published []int) bool {
	t.Helper()
	// Wait until it has caught up (or stopped).
	last := -1
	if len(published) > 0 {
		last = published[len(published)-1]
	}
	redistest.WaitFor(t, 10*time.Second, s.name+" to receive the last message or stop", func() bool {
		got, err := s.state()
		return err != nil || (len(got) > 0 && got[len(got)-1] >= last)
	})
	got, err := s.state()
	seen := map[int]bool{}
	dups, disorder := 0, 0
	for i, n := range got {
		if seen[n] {
			dups++
		}
		seen[n] = true
		if i > 0 && n < got[i-1] {
			disorder++
		}
	}
	if dups > 0 || disorder > 0 {
		t.Errorf("%s: %d duplicates, %d out of order in %d messages", s.name, dups, disorder, len(got))
	}
	upTo := last
	if err != nil {
		var rerr redis.Error
		if !errors.As(err, &rerr) || !strings.Contains(err.Error(), "resubscribe") {
			t.Errorf("%s: disconnected without being told to resubscribe: %v", s.name, err)
		}
		upTo = -1
		if len(got) > 0 {
			upTo = got[len(got)-1]
		}
	}
	missing := 0
	firstMissing := -1
	for _, n := range published {
		if n <= upTo && !seen[n] {
			if missing == 0 {
				firstMissing = n
			}
			missing++
		}
	}
	t.Logf("%s: received %d of %d published messages; stopped: %v; missing before its last message: %d",
		s.name, len(got), len(published), err, missing)
	if missing > 0 {
		t.Errorf("%s: %d published messages silently missed (first %d)", s.name, missing, firstMissing)
	}
	return err != nil
}

// TestPubSubAcrossResize: two subscribers, one on each of two proxies,
// receive every message, once and in order, of a publisher doing 1,000
// PUBLISH/s through the second proxy while the db is resized 64M → 256M;
// every publish reaches both subscribers (none is briefly unsubscribed).
func TestPubSubAcrossResize(t *testing.T) {
	meta, store := metaStore(t)
	ctx := t.Context()
	small, sm := crashPair(t, store, "64M", "1gb")
	big, _ := crashPair(t, store, "256M", "2gb")
	if _, err := store.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	url := "redis://" + meta.Addr
	startGranary(t, "master", "--metadb-url", url, "--id", "m1", "--lease", "1s", "--backend-timeout", "500ms")
	startGranary(t, "keeper", "--metadb-url", url, "--id", "k1", "--lease", "1s", "--pairs-poll", "100ms")
	_, px1 := startGranaryListening(t, "--addr", "proxy", "--metadb-url", url, "--id", "px1")
	_, px2 := startGranaryListening(t, "--addr", "proxy", "--metadb-url", url, "--id", "px2")
	_, created, err := store.ClaimDB(ctx, "acme", small, metadb.WriteAsync, 64<<20, 8, "create-1")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "create done", func() bool { return job(t, store, created.ID).State == metadb.JobDone })
	db, err := store.DB(ctx, "acme", created.Index)
	if err != nil {
		t.Fatal(err)
	}
	fillSlot(t, sm.ClientDB(t, db.SlotDB), 5000)
	for _, px := range []string{px1, px2} {
		rc := redis.NewClient(&redis.Options{Addr: px, Username: "acme", Password: "pw", DB: db.Index, MaxRetries: -1})
		redistest.WaitFor(t, 20*time.Second, "proxy "+px+" to serve the db", func() bool { return rc.Set(ctx, "ready", "1", 0).Err() == nil })
		rc.Close()
	}
	s1 := subscribeNums(t, "subscriber on proxy 1", px1, db.Index)
	s2 := subscribeNums(t, "subscriber on proxy 2", px2, db.Index)
	pub := publishNums(ctx, t, px2, db.Index, 1000)
	redistest.WaitFor(t, 10*time.Second, "publishing to flow", func() bool { return pub.count() >= 500 })

	start := time.Now()
	if _, err := store.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-ps"); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 30*time.Second, "the resize to finish", func() bool { return job(t, store, "resize-ps").State != metadb.JobRunning })
	took := time.Since(start)
	if j := job(t, store, "resize-ps"); j.State != metadb.JobDone {
		t.Fatalf("resize: %s %s", j.State, j.Error)
	}
	n := pub.count()
	redistest.WaitFor(t, 10*time.Second, "publishing after the switch", func() bool { return pub.count() >= n+1000 })
	published := pub.halt()
	after, _ := store.DB(ctx, "acme", db.Index)
	if after.Pair != big.ID {
		t.Fatalf("the db is on %s after the resize, want %s", after.Pair, big.ID)
	}
	pub.mu.Lock()
	t.Logf("resize took %v; %d publishes succeeded, %d failed (first %v), receivers per publish %v, longest publish %v",
		took, len(published), pub.fails, pub.firstErr, pub.receivers, pub.maxWait)
	fails, receivers := pub.fails, pub.receivers
	pub.mu.Unlock()
	if fails > 0 {
		t.Errorf("%d publishes failed during the resize", fails)
	}
	if len(receivers) != 1 || receivers[2] == 0 {
		t.Errorf("publishes reached %v subscribers (count of publishes by receivers), want always 2", receivers)
	}
	for _, s := range []*numSub{s1, s2} {
		if checkNums(t, s, published) {
			t.Errorf("%s was disconnected by a resize", s.name)
		}
	}
}

// TestPubSubAcrossFailover: the pair's master is SIGKILLed while a
// publisher does 1,000 PUBLISH/s through the proxy; the subscriber either
// receives every message published or is disconnected with an error that
// says to resubscribe, and has no gap before it; a new subscription works
// on the promoted master.
func TestPubSubAcrossFailover(t *testing.T) {
	c := startPairCluster(t, 1)
	ctx := t.Context()
	s := subscribeNums(t, "subscriber", c.proxy, c.db.Index)
	pub := publishNums(ctx, t, c.proxy, c.db.Index, 1000)
	before := c.waitWatched()
	redistest.WaitFor(t, 10*time.Second, "publishing to flow", func() bool { return pub.count() >= 500 })
	c.servers[before.Master].Kill()
	redistest.WaitFor(t, 20*time.Second, "failover", func() bool { return c.pair().Master == before.Replica })
	n := pub.count()
	redistest.WaitFor(t, 20*time.Second, "publishing after the failover", func() bool { return pub.count() >= n+500 })
	published := pub.halt()
	pub.mu.Lock()
	t.Logf("%d publishes succeeded, %d failed (first %v)", len(published), pub.fails, pub.firstErr)
	pub.mu.Unlock()
	disconnected := checkNums(t, s, published)
	t.Logf("subscriber disconnected with a resubscribe error: %v", disconnected)

	// Resubscribing works on the new master.
	s2 := subscribeNums(t, "resubscribed", c.proxy, c.db.Index)
	pub2 := publishNums(ctx, t, c.proxy, c.db.Index, 1000)
	redistest.WaitFor(t, 10*time.Second, "publishing again", func() bool { return pub2.count() >= 200 })
	if checkNums(t, s2, pub2.halt()) {
		t.Errorf("the new subscription was disconnected")
	}
}

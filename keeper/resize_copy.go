package keeper

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// A resize copies one db from its slot on the source pair to the reserved
// slot on the target pair's master while the db stays online, without ever
// asking the source master for more than O(small) work per command:
//
//   - keyspace notifications of the source db are turned on on the source
//     MASTER and subscribed to before the copy starts, so every key written
//     afterwards is marked dirty;
//   - the data is read from the source pair's REPLICA (the master when the
//     pair has no replica in sync): SCAN, then each key's MEMORY USAGE
//     (type and length only near the bounds); small keys go over in DUMP + PEXPIRETIME / RESTORE …
//     ABSTTL REPLACE pipelines of at most copyBatchBytes; a big key (over
//     bigKeyBytes or bigKeyElems) goes in pages (GETRANGE, HSCAN, SSCAN,
//     ZSCAN, LRANGE) into a temporary key on the target that a MULTI
//     renames into place with its expiry (see resize_pieces.go);
//   - dirty keys are copied again the same way (or unlinked on the target
//     when gone from the source) until the master holds the db's writes;
//     then a PING on the subscription is the barrier after which every
//     earlier write's notification has arrived, and one last pass makes the
//     copy exact.
//
// Why reading the replica keeps the copy exact. A write to key K runs on
// the master, which adds it to its replication stream (master_repl_offset)
// in the same event-loop turn, before the keyspace event it raised reaches
// our subscription. So before any read of the replica (the first SCAN, and
// every batch of dirty keys taken after their events arrived) syncReplica
// reads the master's offset O and waits until the replica has processed O:
// the replica then holds every write whose event we have seen, or a later
// value, which raises a later event and makes K dirty again. A key never
// written since the subscription began has had its final value on the
// replica since that first wait. At catchup the proxies hold the db's
// writes and have acknowledged it: no tenant write reaches the source
// after the barrier, so barrier + syncReplica + one last pass leave the
// target equal to the master. Expiries still happen on the master under the
// hold; they raise events too (a dirty key gone is unlinked), and RESTORE's
// ABSTTL gives the copy the same absolute expiry, so it expires on the
// target at the same moment. verify checks the key counts against the
// master and a sample of values against the synced replica.

// Bounds of the copy's commands: each one moves at most about this much.
const (
	copyBatchBytes = 1 << 20 // DUMP payload per RESTORE pipeline (MEMORY USAGE estimate)
	bigKeyBytes    = 1 << 20 // above this a key is copied in pieces
	bigKeyElems    = 10000   // an aggregate with more elements is copied in pieces
	pieceBytes     = 256 << 10
	pieceElems     = 1000
	scanCount      = 1000 // SCAN COUNT, and the most dirty keys per pass
	copyWorkers    = 3    // SCAN batches copied at once by the full copy
)

// copySession is one resize's copy in flight.
type copySession struct {
	src, dst *redis.Client // clients with the source master's and target db selected
	// read is where the data is read: the source pair's replica, or src
	// when the pair has no replica in sync (fromReplica false).
	read         *redis.Client
	fromReplica  bool
	tmpPrefix    string // names the target's temporary keys of piecewise copies
	ps           *redis.PubSub
	prefix       string // keyspace channel prefix of the source db
	srcAddr      string
	notifyBefore string // notify-keyspace-events before the session
	// owner, when set, is asked before every batch whether this keeper
	// still owns the job (its lease): a keeper that lost its pair must
	// not write to a target that may already serve the db.
	owner func() error
	// onCopy, when set, is told the number of keys each batch copied.
	onCopy func(n int)

	bigMu sync.Mutex // held by the piecewise copy of one big key

	mu     sync.Mutex
	dirty  map[string]struct{}
	broken error
	pongs  chan string
	done   chan struct{}
}

func newDBClient(addr string, db int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DB: db, PoolSize: 4, MaxRetries: -1,
		DialTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		DisableIdentity: true})
}

// notifyUsers counts the sessions of this process that need keyspace
// notifications on a server, so the last one restores the setting.
var notifyUsers = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

// openCopy connects to both slots and, when replicaAddr names a replica
// in sync with the source master, reads the data from it. With track, it
// turns on keyspace notifications on the source master and subscribes to
// the source db's before returning, so that every later write is seen.
func openCopy(ctx context.Context, srcAddr, replicaAddr string, srcDB int, dstAddr string, dstDB int, track bool) (*copySession, error) {
	if _, _, err := net.SplitHostPort(dstAddr); err != nil {
		return nil, fmt.Errorf("target address %q: %w", dstAddr, err)
	}
	s := &copySession{src: newDBClient(srcAddr, srcDB), dst: newDBClient(dstAddr, dstDB),
		srcAddr: srcAddr, prefix: fmt.Sprintf("__keyspace@%d__:", srcDB),
		tmpPrefix: fmt.Sprintf("\x00granary:copy:%x:", rand.Uint64()),
		dirty:     map[string]struct{}{}, pongs: make(chan string, 4), done: make(chan struct{})}
	s.read = s.src
	if replicaAddr != "" {
		r := newDBClient(replicaAddr, srcDB)
		if readsFromReplica(ctx, s.src, r) {
			s.read, s.fromReplica = r, true
		} else {
			_ = r.Close()
		}
	}
	if !track {
		close(s.done)
		return s, nil
	}
	if err := s.enableNotify(ctx); err != nil {
		s.close()
		return nil, err
	}
	s.ps = s.src.PSubscribe(ctx, s.prefix+"*")
	// The subscription is live once confirmed; only then may the copy start.
	if _, err := s.ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		close(s.done) // no receiver was started
		s.close()
		return nil, fmt.Errorf("subscribe to %s keyspace events: %w", srcAddr, err)
	}
	go s.receive(ctx)
	return s, nil
}

func (s *copySession) enableNotify(ctx context.Context) error {
	notifyUsers.Lock()
	defer notifyUsers.Unlock()
	cur, err := s.src.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return fmt.Errorf("read notify-keyspace-events of %s: %w", s.srcAddr, err)
	}
	v := cur["notify-keyspace-events"]
	s.notifyBefore = v
	notifyUsers.n[s.srcAddr]++
	if strings.Contains(v, "K") && strings.Contains(v, "A") {
		return nil
	}
	if err := s.src.ConfigSet(ctx, "notify-keyspace-events", v+"KA").Err(); err != nil {
		notifyUsers.n[s.srcAddr]--
		return fmt.Errorf("enable keyspace events on %s: %w", s.srcAddr, err)
	}
	return nil
}

// receive marks keys dirty until the subscription ends. A broken
// subscription may have lost events: the session is then unusable.
func (s *copySession) receive(ctx context.Context) {
	defer close(s.done)
	for {
		msg, err := s.ps.Receive(ctx)
		if err != nil {
			s.fail(fmt.Errorf("keyspace events: %w", err))
			return
		}
		switch m := msg.(type) {
		case *redis.Message:
			s.mu.Lock()
			s.dirty[strings.TrimPrefix(m.Channel, s.prefix)] = struct{}{}
			s.mu.Unlock()
		case *redis.Pong:
			select {
			case s.pongs <- m.Payload:
			default:
			}
		case *redis.Subscription:
			// go-redis resubscribed after a dropped connection: events
			// were lost meanwhile.
			s.fail(errors.New("keyspace events subscription was interrupted"))
			return
		}
	}
}

func (s *copySession) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = err
	}
}

func (s *copySession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

// close ends the subscription and restores the notification setting when
// no other session of this process needs it.
func (s *copySession) close() {
	if s.ps != nil {
		_ = s.ps.Close()
		<-s.done
		notifyUsers.Lock()
		notifyUsers.n[s.srcAddr]--
		notifyUsers.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		restoreNotify(ctx, s.src, s.srcAddr, s.notifyBefore)
		cancel()
	}
	if s.fromReplica {
		_ = s.read.Close()
	}
	_ = s.src.Close()
	_ = s.dst.Close()
}

// restoreNotify sets notify-keyspace-events back to before unless a copy
// session of this process still needs the events of that server.
func restoreNotify(ctx context.Context, c *redis.Client, addr, before string) {
	notifyUsers.Lock()
	defer notifyUsers.Unlock()
	if notifyUsers.n[addr] > 0 {
		return
	}
	delete(notifyUsers.n, addr)
	_ = c.ConfigSet(ctx, "notify-keyspace-events", before).Err()
}

// fullCopy empties the target db and copies every key of the source db,
// calling progress after each batch with the keys copied so far.
func (s *copySession) fullCopy(ctx context.Context, progress func(keys int64)) error {
	if err := s.dst.FlushDBAsync(ctx).Err(); err != nil {
		return fmt.Errorf("empty target db: %w", err)
	}
	// From here the replica has every value not changed since the
	// subscription began (see the comment at the top).
	if err := s.syncReplica(ctx); err != nil {
		return err
	}
	// copyWorkers batches are copied at once while SCAN goes on, so the
	// reader's, the keeper's and the target's round trips overlap. Two
	// batches may hold the same key (SCAN can return a key twice) or copy
	// it in either order: a key whose value changed between the two reads
	// raised an event and is dirty, so a later pass copies it again; big
	// keys are copied one at a time (bigMu), so two piecewise copies never
	// share a temporary key.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	var copied atomic.Int64
	var progressMu sync.Mutex // progress is called by one batch at a time,
	var reported int64        // with a count that never goes back
	var cursor uint64
	for {
		keys, next, err := s.read.Scan(gctx, cursor, "", scanCount).Result()
		if err != nil {
			_ = g.Wait()
			return fmt.Errorf("scan source db: %w", err)
		}
		if err := s.owns(); err != nil {
			_ = g.Wait()
			return err
		}
		g.Go(func() error {
			if err := s.copyKeys(gctx, keys); err != nil {
				return err
			}
			n := copied.Add(int64(len(keys)))
			if progress != nil {
				progressMu.Lock()
				if n > reported {
					reported = n
					progress(n)
				}
				progressMu.Unlock()
			}
			return s.err()
		})
		if cursor = next; cursor == 0 || gctx.Err() != nil {
			break
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (s *copySession) owns() error {
	if s.owner == nil {
		return nil
	}
	return s.owner()
}

// takeDirty removes and returns every dirty key.
func (s *copySession) takeDirty() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.dirty))
	for k := range s.dirty {
		out = append(out, k)
	}
	clear(s.dirty)
	return out
}

// drain copies the keys dirty when it is called again: keys still on the
// source are copied, keys gone from it are unlinked on the target. A key
// written again meanwhile is marked dirty again by its event, for the next
// drain, so nothing is missed, at worst copied twice; one pass per call,
// so that keys written without pause (a hot big key) cannot keep it
// running. Under the hold, after the barrier, one call makes the copy
// exact. It returns how many keys it handled.
func (s *copySession) drain(ctx context.Context) (int, error) {
	keys := s.takeDirty()
	for i := 0; i < len(keys); i += scanCount {
		if err := s.err(); err != nil {
			return i, err
		}
		if err := s.owns(); err != nil {
			return i, err
		}
		// Their events have arrived, so the master's offset covers the
		// writes that raised them: the replica must get there first.
		if err := s.syncReplica(ctx); err != nil {
			return i, err
		}
		if err := s.copyKeys(ctx, keys[i:min(i+scanCount, len(keys))]); err != nil {
			return i, err
		}
	}
	return len(keys), s.err()
}

// barrier returns once every event of a write made before it was called
// has been received: the server answers the subscription's PING after the
// events already queued on that connection.
func (s *copySession) barrier(ctx context.Context) error {
	token := strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := s.ps.Ping(ctx, token); err != nil {
		return fmt.Errorf("barrier ping: %w", err)
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case p := <-s.pongs:
			if p == token {
				return nil
			}
		case <-s.done:
			return s.err()
		case <-t.C:
			return errors.New("barrier ping: no answer")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errMismatch: the copy differs from the source.
var errMismatch = errors.New("copy differs from the source")

// verify compares the key counts of the source master and the target, and
// a sample of keys (every key of a small db) between the synced replica and
// the target: DUMP payloads for small keys, type and length for big ones
// (a DUMP of those would block both servers). Writes must be held.
func (s *copySession) verify(ctx context.Context, sample int) error {
	if err := s.syncReplica(ctx); err != nil {
		return err
	}
	n1, err := s.src.DBSize(ctx).Result()
	if err != nil {
		return err
	}
	n2, err := s.dst.DBSize(ctx).Result()
	if err != nil {
		return err
	}
	if n1 != n2 {
		return fmt.Errorf("%w: %d keys on the source, %d on the target", errMismatch, n1, n2)
	}
	var keys []string
	if n1 <= int64(sample) {
		keys, err = scanAll(ctx, s.read)
	} else {
		keys, err = randomKeys(ctx, s.read, sample)
	}
	if err != nil {
		return err
	}
	for i := 0; i < len(keys); i += scanCount {
		if err := s.compare(ctx, keys[i:min(i+scanCount, len(keys))]); err != nil {
			return err
		}
	}
	return nil
}

func (s *copySession) compare(ctx context.Context, keys []string) error {
	ks, err := inspectKeys(ctx, s.read, keys)
	if err != nil {
		return err
	}
	var small []string
	for _, k := range ks {
		if !k.big() {
			small = append(small, k.name)
			continue
		}
		on, err := inspectOne(ctx, s.dst, k.name)
		if err != nil {
			return err
		}
		if on.typ != k.typ || on.elems != k.elems {
			return fmt.Errorf("%w: key %q is a %s of %d on the source, a %s of %d on the target",
				errMismatch, k.name, k.typ, k.elems, on.typ, on.elems)
		}
	}
	a, err := dumps(ctx, s.read, small)
	if err != nil {
		return err
	}
	b, err := dumps(ctx, s.dst, small)
	if err != nil {
		return err
	}
	for i := range small {
		if a[i] != b[i] {
			return fmt.Errorf("%w: key %q", errMismatch, small[i])
		}
	}
	return nil
}

func scanAll(ctx context.Context, c *redis.Client) ([]string, error) {
	var out []string
	iter := c.Scan(ctx, 0, "", scanCount).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	return out, iter.Err()
}

func randomKeys(ctx context.Context, c *redis.Client, n int) ([]string, error) {
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := 0; i < n; i++ {
			p.RandomKey(ctx)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]string, 0, n)
	for _, c := range cmds {
		if k := c.(*redis.StringCmd).Val(); k != "" {
			out = append(out, k)
		}
	}
	return out, nil
}

func dumps(ctx context.Context, c *redis.Client, keys []string) ([]string, error) {
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Dump(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]string, len(keys))
	for i, c := range cmds {
		out[i] = c.(*redis.StringCmd).Val()
	}
	return out, nil
}

// waitReplica waits until the target's replica has everything its master
// has, so that reads sent to the replica after the switch see the copy.
// INFO's replica offsets are only as fresh as the replica's last ACK (once
// a second); WAIT asks for an ACK at once. It needs a write of its own on
// the connection to wait for: a PUBLISH, which replicates and touches no
// key (no one listens on that channel).
func (s *copySession) waitReplica(ctx context.Context, timeout time.Duration) error {
	conn := s.dst.Conn()
	defer conn.Close()
	if err := conn.Publish(ctx, "__granary:resize-barrier", "1").Err(); err != nil {
		return fmt.Errorf("replication barrier: %w", err)
	}
	n, err := conn.Wait(ctx, 1, timeout).Result()
	if err != nil {
		return fmt.Errorf("wait for the target replica: %w", err)
	}
	if n < 1 {
		return fmt.Errorf("target replica did not confirm the copy within %v", timeout)
	}
	return nil
}

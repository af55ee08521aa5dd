package keeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A resize copies one db from its slot on the source pair's master to the
// reserved slot on the target pair's master while the db stays online:
//
//   - keyspace notifications of the source db are turned on and subscribed
//     to before the copy starts, so every key written afterwards is marked
//     dirty;
//   - SCAN + MIGRATE … COPY REPLACE KEYS copies every key (SCAN returns every
//     key present for the whole scan; keys written during it are dirty);
//   - dirty keys are copied again (or deleted on the target when gone from
//     the source) until the master holds the db's writes; then a PING on the
//     subscription is the barrier after which every earlier write's
//     notification has arrived, and one last pass makes the copy exact.

// copyBatch is the SCAN COUNT and the most keys per MIGRATE.
const copyBatch = 1000

// copySession is one resize's copy in flight.
type copySession struct {
	src, dst     *redis.Client // clients with the source and target db selected
	dstHost      string
	dstPort      string
	dstDB        int
	ps           *redis.PubSub
	prefix       string // keyspace channel prefix of the source db
	srcAddr      string
	notifyBefore string // notify-keyspace-events before the session
	// owner, when set, is asked before every batch whether this keeper
	// still owns the job (its lease): a keeper that lost its pair must
	// not write to a target that may already serve the db.
	owner func() error
	// onCopy, when set, is told the number of keys each MIGRATE copied.
	onCopy func(n int)

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

// openCopy connects to both slots. With track, it turns on keyspace
// notifications on the source server and subscribes to the source db's
// before returning, so that every later write is seen.
func openCopy(ctx context.Context, srcAddr string, srcDB int, dstAddr string, dstDB int, track bool) (*copySession, error) {
	host, port, err := net.SplitHostPort(dstAddr)
	if err != nil {
		return nil, fmt.Errorf("target address %q: %w", dstAddr, err)
	}
	s := &copySession{src: newDBClient(srcAddr, srcDB), dst: newDBClient(dstAddr, dstDB), dstHost: host, dstPort: port,
		dstDB: dstDB, srcAddr: srcAddr, prefix: fmt.Sprintf("__keyspace@%d__:", srcDB),
		dirty: map[string]struct{}{}, pongs: make(chan string, 4), done: make(chan struct{})}
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

// migrate copies keys from the source to the target db, replacing what the
// target has. Keys gone from the source meanwhile are skipped.
func (s *copySession) migrate(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	args := make([]any, 0, len(keys)+9)
	args = append(args, "MIGRATE", s.dstHost, s.dstPort, "", s.dstDB, 20000, "COPY", "REPLACE", "KEYS")
	for _, k := range keys {
		args = append(args, k)
	}
	if err := s.src.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("migrate %d keys: %w", len(keys), err)
	}
	if s.onCopy != nil {
		s.onCopy(len(keys))
	}
	return nil
}

// fullCopy empties the target db and copies every key of the source db,
// calling progress after each batch with the keys copied so far.
func (s *copySession) fullCopy(ctx context.Context, progress func(keys int64)) error {
	if err := s.dst.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("empty target db: %w", err)
	}
	var cursor uint64
	var copied int64
	for {
		keys, next, err := s.src.Scan(ctx, cursor, "", copyBatch).Result()
		if err != nil {
			return fmt.Errorf("scan source db: %w", err)
		}
		if err := s.owns(); err != nil {
			return err
		}
		if err := s.migrate(ctx, keys); err != nil {
			return err
		}
		copied += int64(len(keys))
		if progress != nil {
			progress(copied)
		}
		if err := s.err(); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

func (s *copySession) owns() error {
	if s.owner == nil {
		return nil
	}
	return s.owner()
}

// takeDirty removes and returns up to n dirty keys.
func (s *copySession) takeDirty(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, min(n, len(s.dirty)))
	for k := range s.dirty {
		if len(out) == n {
			break
		}
		out = append(out, k)
		delete(s.dirty, k)
	}
	return out
}

// drain copies dirty keys again until none is left: keys still on the
// source are migrated, keys gone from it are deleted on the target. A key
// written again meanwhile is marked dirty again by its event, so nothing
// is missed, at worst copied twice. It returns how many keys it handled.
func (s *copySession) drain(ctx context.Context) (int, error) {
	total := 0
	for {
		if err := s.err(); err != nil {
			return total, err
		}
		keys := s.takeDirty(copyBatch)
		if len(keys) == 0 {
			return total, nil
		}
		if err := s.owns(); err != nil {
			return total, err
		}
		total += len(keys)
		cmds, err := s.src.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Exists(ctx, k)
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("check dirty keys: %w", err)
		}
		var present, gone []string
		for i, c := range cmds {
			if c.(*redis.IntCmd).Val() > 0 {
				present = append(present, keys[i])
			} else {
				gone = append(gone, keys[i])
			}
		}
		if err := s.migrate(ctx, present); err != nil {
			return total, err
		}
		if len(gone) > 0 {
			if err := s.dst.Del(ctx, gone...).Err(); err != nil {
				return total, fmt.Errorf("delete gone keys on target: %w", err)
			}
		}
	}
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

// verify compares the key counts and the DUMP payloads of a sample of keys
// (every key of a small db) on both sides. Writes must be held.
func (s *copySession) verify(ctx context.Context, sample int) error {
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
		keys, err = scanAll(ctx, s.src)
	} else {
		keys, err = randomKeys(ctx, s.src, sample)
	}
	if err != nil {
		return err
	}
	a, err := dumps(ctx, s.src, keys)
	if err != nil {
		return err
	}
	b, err := dumps(ctx, s.dst, keys)
	if err != nil {
		return err
	}
	for i := range keys {
		if a[i] != b[i] {
			return fmt.Errorf("%w: key %q", errMismatch, keys[i])
		}
	}
	return nil
}

func scanAll(ctx context.Context, c *redis.Client) ([]string, error) {
	var out []string
	iter := c.Scan(ctx, 0, "", copyBatch).Iterator()
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

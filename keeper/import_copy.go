package keeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// An import copies an outside Redis db (the source) into a tenant db's
// slot (the target) while the tenant's application still writes to the
// source. The source is only read: the session subscribes to the source
// db's keyspace events (the tenant turned them on; the keeper never
// changes the source's settings), copies every key with SCAN + DUMP +
// PEXPIRETIME and RESTORE … ABSTTL REPLACE on the target (MIGRATE would
// run on the source, which is not ours to command), then keeps applying
// the keys the events mark dirty: re-DUMP the current value, or DEL on
// the target when the key is gone. The dirty set holds at most maxDirty
// keys; an overflow, like a broken subscription, may have lost changes,
// so the session is then over and a new one makes a new full pass.

// Import copy limits.
const (
	importBatch    = 500     // keys per SCAN and per DUMP/RESTORE pipeline
	importMaxDirty = 100_000 // dirty keys held before the session gives up for a new full pass
)

// errDirtyOverflow: more keys changed than the dirty set holds.
var errDirtyOverflow = errors.New("too many keys changed on the source at once: starting a new full pass")

// importSession is one import copy in flight.
type importSession struct {
	src, dst *redis.Client // source db, target slot
	ps       *redis.PubSub
	prefix   string
	// noExpireTime: the source predates PEXPIRETIME (Redis < 7), so TTLs
	// are read with PTTL and made absolute here.
	noExpireTime bool
	owner        func() error

	mu     sync.Mutex
	dirty  map[string]struct{}
	broken error
	pongs  chan string
	done   chan struct{}
}

// openImport subscribes to the source db's keyspace events and returns
// once the subscription is confirmed, so that every later write is seen.
func openImport(ctx context.Context, src, dst *redis.Client, srcDB int) (*importSession, error) {
	s := &importSession{src: src, dst: dst, prefix: fmt.Sprintf("__keyspace@%d__:", srcDB),
		dirty: map[string]struct{}{}, pongs: make(chan string, 4), done: make(chan struct{})}
	s.ps = src.PSubscribe(ctx, s.prefix+"*")
	if _, err := s.ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		close(s.done)
		_ = s.ps.Close()
		return nil, fmt.Errorf("subscribe to the source's keyspace events: %w", err)
	}
	go s.receive(ctx)
	return s, nil
}

func (s *importSession) receive(ctx context.Context) {
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
			if len(s.dirty) >= importMaxDirty {
				if s.broken == nil {
					s.broken = errDirtyOverflow
				}
				clear(s.dirty) // the next session starts over anyway
			} else if s.broken == nil {
				s.dirty[strings.TrimPrefix(m.Channel, s.prefix)] = struct{}{}
			}
			s.mu.Unlock()
		case *redis.Pong:
			select {
			case s.pongs <- m.Payload:
			default:
			}
		case *redis.Subscription:
			s.fail(errors.New("keyspace events subscription was interrupted"))
			return
		}
	}
}

func (s *importSession) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = err
	}
}

func (s *importSession) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.broken
}

func (s *importSession) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.dirty)
}

func (s *importSession) close() {
	_ = s.ps.Close()
	<-s.done
}

func (s *importSession) takeDirty(n int) []string {
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

// copyKeys copies keys from the source to the target as they are now:
// present keys are restored with their absolute expiry, keys gone from
// the source are deleted on the target.
func (s *importSession) copyKeys(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := s.owner(); err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	cmds, err := s.src.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Dump(ctx, k)
			if s.noExpireTime {
				p.PTTL(ctx, k)
			} else {
				p.Do(ctx, "PEXPIRETIME", k)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read source keys: %w", err)
	}
	_, err = s.dst.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			payload, err := cmds[2*i].(*redis.StringCmd).Result()
			if errors.Is(err, redis.Nil) {
				p.Del(ctx, k)
				continue
			}
			var at int64
			switch c := cmds[2*i+1].(type) {
			case *redis.DurationCmd: // PTTL
				if d := c.Val(); d > 0 {
					at = now + d.Milliseconds()
				}
			case *redis.Cmd: // PEXPIRETIME
				if v, _ := c.Int64(); v > 0 {
					at = v
				}
			}
			if at > 0 {
				p.Do(ctx, "RESTORE", k, at, payload, "REPLACE", "ABSTTL")
			} else {
				p.Do(ctx, "RESTORE", k, 0, payload, "REPLACE")
			}
		}
		return nil
	})
	if err != nil {
		return &targetError{err}
	}
	return nil
}

// targetError is a failed write to the import's slot. Its text, which the
// job records for the tenant to read, does not name the slot's server.
type targetError struct{ cause error }

func (e *targetError) Error() string {
	return "the db's server did not take the copy (the import retries)"
}
func (e *targetError) Unwrap() error { return e.cause }

// fullPass empties the target and copies every key of the source,
// calling progress with the keys copied so far after each batch; an
// error of progress stops the pass.
func (s *importSession) fullPass(ctx context.Context, progress func(copied int64) error) error {
	if err := s.owner(); err != nil {
		return err
	}
	if err := s.dst.FlushDB(ctx).Err(); err != nil {
		return &targetError{err}
	}
	var cursor uint64
	var copied int64
	for {
		keys, next, err := s.src.Scan(ctx, cursor, "", importBatch).Result()
		if err != nil {
			return fmt.Errorf("scan the source db: %w", err)
		}
		if err := s.copyKeys(ctx, keys); err != nil {
			return err
		}
		copied += int64(len(keys))
		if err := progress(copied); err != nil {
			return err
		}
		if err := s.err(); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// drain applies dirty keys until none is left; it returns how many.
func (s *importSession) drain(ctx context.Context) (int, error) {
	total := 0
	for {
		if err := s.err(); err != nil {
			return total, err
		}
		keys := s.takeDirty(importBatch)
		if len(keys) == 0 {
			return total, nil
		}
		if err := s.copyKeys(ctx, keys); err != nil {
			return total, err
		}
		total += len(keys)
	}
}

// barrier returns once the events of every source write made before it
// was called have been received (the source answers the subscription's
// PING after the events queued before it).
func (s *importSession) barrier(ctx context.Context) error {
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
			return errors.New("barrier ping: the source did not answer")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// errImportMismatch: the target differs from the source.
var errImportMismatch = errors.New("the copy differs from the source (is something still writing to it?)")

// verify compares key counts and the DUMP payloads and expiries of a
// sample of keys (every key of a small db).
func (s *importSession) verify(ctx context.Context, sample int) error {
	n1, err := s.src.DBSize(ctx).Result()
	if err != nil {
		return fmt.Errorf("source DBSIZE: %w", err)
	}
	n2, err := s.dst.DBSize(ctx).Result()
	if err != nil {
		return &targetError{err}
	}
	if n1 != n2 {
		return fmt.Errorf("%w: %d keys on the source, %d on the target", errImportMismatch, n1, n2)
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
		return &targetError{err}
	}
	differ := 0
	for i := range keys {
		if a[i] == b[i] {
			continue
		}
		// A hash or set in a hash table dumps its elements in the table's
		// order, which differs between servers: compare the contents.
		same, err := sameValue(ctx, s.src, s.dst, keys[i])
		if err != nil {
			return err
		}
		if !same {
			differ++
		}
	}
	if differ > 0 {
		return fmt.Errorf("%w: %d of %d sampled keys differ", errImportMismatch, differ, len(keys))
	}
	return nil
}

// sameValue reports whether key holds the same value on a and b, by type:
// what DUMP cannot tell when its payloads differ only in element order.
func sameValue(ctx context.Context, a, b *redis.Client, key string) (bool, error) {
	read := func(c *redis.Client) (string, error) {
		typ, err := c.Type(ctx, key).Result()
		if err != nil {
			return "", err
		}
		var v any
		switch typ {
		case "none":
		case "string":
			v, err = c.Get(ctx, key).Result()
		case "hash":
			v, err = c.HGetAll(ctx, key).Result()
		case "set":
			var m []string
			m, err = c.SMembers(ctx, key).Result()
			slices.Sort(m)
			v = m
		case "zset":
			v, err = c.ZRangeWithScores(ctx, key, 0, -1).Result()
		case "list":
			v, err = c.LRange(ctx, key, 0, -1).Result()
		default: // streams and modules' types: their DUMP is deterministic
			v, err = c.Dump(ctx, key).Result()
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", err
		}
		return typ + ":" + fmt.Sprint(v), nil
	}
	x, err := read(a)
	if err != nil {
		return false, err
	}
	y, err := read(b)
	return x == y, err
}

// waitTargetReplica waits until the target's replica has everything its
// master has (see copySession.waitReplica for why a PUBLISH).
func waitTargetReplica(ctx context.Context, dst *redis.Client, timeout time.Duration) error {
	conn := dst.Conn()
	defer conn.Close()
	if err := conn.Publish(ctx, "__granary:import-barrier", "1").Err(); err != nil {
		return &targetError{err}
	}
	n, err := conn.Wait(ctx, 1, timeout).Result()
	if err != nil {
		return &targetError{err}
	}
	if n < 1 {
		return fmt.Errorf("the target replica did not confirm the copy within %v", timeout)
	}
	return nil
}

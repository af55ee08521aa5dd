package metadb

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
)

// topology is what a transaction announces on the bus. When bump is set the
// transaction also increments the topology version, and every message gets
// its own new version; the bump, the record changes and the PUBLISH happen in
// one MULTI/EXEC, so subscribers see messages in version order.
type topology struct {
	sender string
	msgs   []*buspb.Envelope
}

// stamp reads the current version (which the caller watches) and returns
// the version after the messages, with each message stamped with its own
// consecutive version and encoded. With no messages the version still
// advances by one.
func (t *topology) stamp(ctx context.Context, tx *redis.Tx) (next uint64, payloads [][]byte, err error) {
	cur, err := tx.Get(ctx, keyVersion).Uint64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, nil, err
	}
	next = cur
	for _, m := range t.msgs {
		next++
		m.Version = next
		m.Sender = t.sender
		m.UnixNanos = time.Now().UnixNano()
		b, err := proto.Marshal(m)
		if err != nil {
			return 0, nil, err
		}
		payloads = append(payloads, b)
	}
	if len(t.msgs) == 0 {
		next++
	}
	return next, payloads, nil
}

// announce stamps msgs from sender (see stamp) and returns what queues
// their version bump and PUBLISH in the caller's MULTI/EXEC. With no
// messages it queues nothing: the change is not a topology change and the
// version stays.
func announce(ctx context.Context, tx *redis.Tx, sender string, msgs []*buspb.Envelope) (queue func(redis.Pipeliner), err error) {
	if len(msgs) == 0 {
		return func(redis.Pipeliner) {}, nil
	}
	next, payloads, err := (&topology{sender: sender, msgs: msgs}).stamp(ctx, tx)
	if err != nil {
		return nil, err
	}
	return func(pl redis.Pipeliner) { queueTopology(ctx, pl, next, payloads) }, nil
}

func queueTopology(ctx context.Context, p redis.Pipeliner, next uint64, payloads [][]byte) {
	p.Set(ctx, keyVersion, next, 0)
	for _, b := range payloads {
		p.Publish(ctx, keyBus, b)
	}
}

// Publish sends a notification that changes no topology (version 0): a
// heartbeat, a keeper result. It may be lost; receivers must not depend on it.
func (s *Store) Publish(ctx context.Context, sender string, env *buspb.Envelope) error {
	env.Version = 0
	env.Sender = sender
	env.UnixNanos = time.Now().UnixNano()
	b, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	return s.rdb.Publish(ctx, keyBus, b).Err()
}

// Announce bumps the topology version and publishes the messages with it,
// with no other change. The master uses it to tell proxies to reload.
func (s *Store) Announce(ctx context.Context, f *Fence, sender string, msgs ...*buspb.Envelope) (uint64, error) {
	t := &topology{sender: sender, msgs: msgs}
	var next uint64
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		n, payloads, err := t.stamp(ctx, tx)
		if err != nil {
			return err
		}
		next = n
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			queueTopology(ctx, p, n, payloads)
			return nil
		})
		return err
	}, keyVersion)
	return next, err
}

// Subscriber receives bus messages in version order. Handle is called for
// every message whose version is the next expected one, and for every
// notification (version 0). Resync is called at the start, after every
// reconnect, and whenever a version gap shows that messages were lost; it
// must reload the subscriber's state from metadb and return the version it
// loaded. Handle and Resync are called from one goroutine.
type Subscriber struct {
	Handle func(ctx context.Context, env *buspb.Envelope)
	Resync func(ctx context.Context) (uint64, error)
	// OnError, if set, is told about decode and resync errors.
	OnError func(err error)
}

// The bus keep-alive: a ping every busPing; silence for busSilence means
// the connection is dead.
const (
	busPing    = 2 * time.Second
	busSilence = 3 * busPing
)

// busAction is what a subscriber does with one bus message.
type busAction int

const (
	busApply  busAction = iota // hand it to Handle
	busStale                   // drop it: the loaded state already holds it
	busReload                  // drop it and resync: messages before it were lost
)

func (a busAction) String() string {
	switch a {
	case busApply:
		return "apply"
	case busStale:
		return "stale"
	case busReload:
		return "reload"
	}
	return "busAction(" + strconv.Itoa(int(a)) + ")"
}

// busOrder decides what a subscriber that has applied every topology
// version up to applied does with a message of version v, and the version
// it has applied afterwards (DESIGN.md invariant 2): a notification
// (version 0) is handled and changes nothing, the next version is applied,
// an older one is stale, and a newer one shows a gap, to be reloaded.
func busOrder(applied, v uint64) (busAction, uint64) {
	switch {
	case v == 0:
		return busApply, applied
	case v <= applied:
		return busStale, applied
	case v == applied+1:
		return busApply, v
	default:
		return busReload, applied
	}
}

// Subscribe delivers bus messages to sub until ctx ends. It blocks, and
// the goroutine it starts (the keep-alive) has ended when it returns.
// go-redis reconnects and resubscribes by itself after a dropped
// connection; each (re)subscription triggers a resync because messages
// published meanwhile are lost. It returns nil when ctx ends, and an error
// when it cannot go on: sub lacks Handle or Resync, or the Store was closed.
func (s *Store) Subscribe(ctx context.Context, sub Subscriber) error {
	if sub.Handle == nil || sub.Resync == nil {
		return errors.New("subscribe: the subscriber needs Handle and Resync")
	}
	ps := s.rdb.Subscribe(ctx, keyBus)
	defer ps.Close()
	// The keep-alive stops when the receive loop ends, for whatever reason.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Receive does not watch ctx: it blocks in a read until a message comes.
	// Closing the subscription ends that read, so Subscribe returns when
	// ctx ends even on a quiet bus.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		busKeepAlive(gctx, ps)
		return nil
	})
	g.Go(func() error {
		defer cancel()
		return busReceive(gctx, ps, sub)
	})
	return g.Wait()
}

// busKeepAlive pings the subscription every busPing until ctx ends. A
// metadb host that vanishes without closing the connection would leave
// Receive blocked forever: pinging keeps traffic flowing, and a read that
// sees nothing for busSilence means the link is dead (the timeout makes
// go-redis drop the connection and redial).
func busKeepAlive(ctx context.Context, ps *redis.PubSub) {
	t := time.NewTicker(busPing)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = ps.Ping(ctx)
		}
	}
}

// busReceive reads the subscription and executes busOrder's decisions until
// ctx ends (nil) or the client is closed (an error).
func busReceive(ctx context.Context, ps *redis.PubSub, sub Subscriber) error {
	var applied uint64
	synced := false
	resync := func() {
		for {
			v, err := sub.Resync(ctx)
			if err == nil {
				applied, synced = v, true
				return
			}
			if sub.OnError != nil {
				sub.OnError(fmt.Errorf("resync: %w", err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	for {
		msg, err := ps.ReceiveTimeout(ctx, busSilence)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, redis.ErrClosed) {
				// The Store was closed under us: no redial can help.
				return fmt.Errorf("subscribe: %w", err)
			}
			// The connection broke; go-redis redials on the next Receive.
			synced = false
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				resync()
			}
		case *redis.Message:
			var env buspb.Envelope
			if err := proto.Unmarshal([]byte(m.Payload), &env); err != nil {
				if sub.OnError != nil {
					sub.OnError(fmt.Errorf("decode bus message: %w", err))
				}
				continue
			}
			if !synced {
				resync()
			}
			var act busAction
			act, applied = busOrder(applied, env.Version)
			switch act {
			case busApply:
				sub.Handle(ctx, &env)
			case busReload:
				resync()
			}
		}
	}
}

// BusSubscribers counts the connections subscribed to the bus right now.
func (s *Store) BusSubscribers(ctx context.Context) (int64, error) {
	n, err := s.rdb.PubSubNumSub(ctx, keyBus).Result()
	return n[keyBus], err
}

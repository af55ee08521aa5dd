package keeper

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// What drives measurements. Proxies publish which dbs they saw written in
// their heartbeats; the keeper subscribes to the bus and measures those
// dbs (coalesced by the schedule, at most once per MeasureGap each). The
// bus is the only place that activity exists: it is not recorded in
// metadb, so polling would have nothing to read. Pub/sub loses messages
// while disconnected, so a resubscription triggers a sweep, and the sweep
// also runs every SizingSweep: a db whose writes were missed is measured
// at most one sweep late.

// kickSweep asks for a sweep now.
func (k *Keeper) kickSweep() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// sweepLoop queues every db on this keeper's pairs every SizingSweep, and
// when kicked. The first sweep waits for the first read of the pairs.
func (k *Keeper) sweepLoop(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-k.pairsReady:
	}
	t := time.NewTicker(k.cfg.SizingSweep)
	defer t.Stop()
	for {
		if err := k.sweep(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn().Err(err).Msg("sizing sweep failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.kick:
		}
	}
}

// sweep queues every serving db on this keeper's pairs and refreshes the
// db -> pair routes the heartbeat filter uses.
func (k *Keeper) sweep(ctx context.Context) error {
	dbs, err := k.store.AllDBs(ctx)
	if err != nil {
		return fmt.Errorf("load dbs: %w", err)
	}
	route := make(map[dbKey]string, len(dbs))
	for _, db := range dbs {
		route[dbKey{db.Tenant, db.Index}] = db.Pair
	}
	k.mu.Lock()
	k.route = route
	for key := range k.big {
		if _, ok := route[key]; !ok {
			delete(k.big, key)
		}
	}
	k.mu.Unlock()
	mine := k.myPairs()
	now := time.Now()
	for _, db := range dbs {
		if _, ok := mine[db.Pair]; ok && serving(db) {
			k.sched.add(dbKey{db.Tenant, db.Index}, reasonSweep, now)
		}
	}
	return nil
}

// serving says whether a db holds tenant data worth measuring: not while
// its slot is being flushed for it (creating) or dropped.
func serving(db *metadb.DB) bool {
	return db.State == metadb.DBActive || db.State == metadb.DBResizing
}

// measureLoop runs measurements from the schedule until ctx ends.
func (k *Keeper) measureLoop(ctx context.Context) error {
	for {
		t, ok := k.sched.next(ctx)
		if !ok {
			return nil
		}
		err := k.measureDB(ctx, t.key, t.reason)
		k.sched.done(t.key, time.Now())
		switch {
		case err == nil, ctx.Err() != nil:
		case errors.Is(err, errStale):
			k.log.Debug().Err(err).Str("tenant", t.key.tenant).Int("index", t.key.index).Msg("measurement skipped")
		default:
			k.metrics.measureFailures.Inc()
			k.log.Warn().Err(err).Str("tenant", t.key.tenant).Int("index", t.key.index).Msg("measurement failed")
		}
	}
}

// measureDB measures one tenant db on its pair's replica and records the
// result in metadb. A sweep measures exactly when the db's last exact
// measurement is older than Recalibrate.
func (k *Keeper) measureDB(ctx context.Context, key dbKey, reason string) error {
	db, err := k.store.DB(ctx, key.tenant, key.index)
	if errors.Is(err, metadb.ErrNotFound) {
		return fmt.Errorf("%w: db is gone", errStale)
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.route[key] = db.Pair
	k.mu.Unlock()
	pair, ok := k.myPairs()[db.Pair]
	switch {
	case !ok:
		return fmt.Errorf("%w: pair %s is not watched here", errStale, db.Pair)
	case !serving(db):
		return fmt.Errorf("%w: db is %s", errStale, db.State)
	case !k.leased():
		return fmt.Errorf("%w: lease lapsed", errStale)
	case pair.Replica == "":
		return fmt.Errorf("pair %s has no replica to measure on", pair.ID)
	}

	var exactAt time.Time
	prev, err := k.store.DBSize(ctx, key.tenant, key.index)
	if err != nil && !errors.Is(err, metadb.ErrNotFound) {
		return err
	}
	if prev != nil && prev.Pair == db.Pair && prev.SlotDB == db.SlotDB {
		exactAt = prev.ExactAt
	}
	exact := reason == reasonSweep && k.cfg.Recalibrate > 0 && time.Since(exactAt) > k.cfg.Recalibrate
	if exact {
		reason = "recalibrate"
	}

	k.mu.Lock()
	big := k.big[key]
	k.mu.Unlock()
	if big.pair != db.Pair || big.slot != db.SlotDB {
		big = bigKeySet{}
	}

	mctx, cancel := context.WithTimeout(ctx, k.cfg.MeasureTimeout)
	defer cancel()
	c := k.backends.sizer(pair.Replica)
	if err := replicaReady(mctx, c); err != nil {
		return fmt.Errorf("replica %s of pair %s: %w", pair.Replica, pair.ID, err)
	}
	m, err := k.sizing.measure(mctx, c, db.SlotDB, exact, big.keys, rand.Uint64())
	if err != nil {
		return fmt.Errorf("measure %s db %d: %w", pair.Replica, db.SlotDB, err)
	}
	at := time.Now().UTC()
	if m.Exact {
		exactAt = at
	}
	rec := &metadb.DBSize{Tenant: key.tenant, Index: key.index, Pair: db.Pair, SlotDB: db.SlotDB,
		Server: pair.Replica, Keeper: k.cfg.ID, At: at, UsedBytes: m.Bytes, ErrorBytes: m.ErrorBytes,
		Exact: m.Exact, Keys: m.Keys, Measured: m.Measured, Elapsed: m.elapsed, Reason: reason, ExactAt: exactAt}
	if _, err := k.store.RecordDBSize(ctx, rec); err != nil {
		if errors.Is(err, metadb.ErrBadState) || errors.Is(err, metadb.ErrNotFound) {
			return fmt.Errorf("%w: %v", errStale, err)
		}
		return fmt.Errorf("record size: %w", err)
	}
	k.metrics.measured(m.Exact, m.elapsed)
	k.mu.Lock()
	k.big[key] = bigKeySet{pair: db.Pair, slot: db.SlotDB, keys: m.big}
	k.mu.Unlock()
	k.log.Debug().Str("tenant", key.tenant).Int("index", key.index).Str("reason", reason).
		Int64("used_bytes", m.Bytes).Int64("error_bytes", m.ErrorBytes).Bool("exact", m.Exact).
		Int64("keys", m.Keys).Int64("measured", m.Measured).Dur("took", m.elapsed).Msg("db measured")
	k.announce(ctx, rec)
	return nil
}

// announce publishes a measurement as a KeeperResult notification (version
// 0, command "size"), so a quota loop can react without polling. It may be
// lost: the record in metadb is the fact.
func (k *Keeper) announce(ctx context.Context, m *metadb.DBSize) {
	env := &buspb.Envelope{Payload: &buspb.Envelope_KeeperResult{KeeperResult: &buspb.KeeperResult{
		Command: "size", Ok: true, Detail: map[string]string{
			"tenant":      m.Tenant,
			"index":       strconv.Itoa(m.Index),
			"pair":        m.Pair,
			"used_bytes":  strconv.FormatInt(m.UsedBytes, 10),
			"error_bytes": strconv.FormatInt(m.ErrorBytes, 10),
			"exact":       strconv.FormatBool(m.Exact),
		}}}}
	if err := k.store.Publish(ctx, k.sender(), env); err != nil && ctx.Err() == nil {
		k.log.Debug().Err(err).Msg("announce size failed")
	}
}

// errReplicaNotReady is a replica that may not hold the master's data yet.
var errReplicaNotReady = errors.New("replica not in sync with its master")

// replicaReady refuses to measure a server that is not a synced replica: a
// replica in a full resync holds a partial or empty copy, and measuring it
// would report a db far smaller than it is (and lift a quota ban).
func replicaReady(ctx context.Context, c *redis.Client) error {
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	in := parseInfo(s)
	switch {
	case in.role != "slave":
		return fmt.Errorf("%w: role is %s", errReplicaNotReady, in.role)
	case !in.linkUp:
		return fmt.Errorf("%w: link is down", errReplicaNotReady)
	case in.syncInProgress:
		return fmt.Errorf("%w: sync in progress", errReplicaNotReady)
	}
	return nil
}

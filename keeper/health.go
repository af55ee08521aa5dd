package keeper

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// watchPair probes both servers of a pair every ProbeInterval until ctx
// ends and keeps the pair's health report in metadb. It starts from the
// last stored report, so the run ids and "down since" times seen by a
// previous keeper of the pair carry over a reassignment.
func (k *Keeper) watchPair(ctx context.Context, p metadb.Pair) {
	log := k.log.With().Str("pair", p.ID).Logger()
	h := metadb.PairHealth{Pair: p.ID, LagSec: -1, LagBytes: -1}
	if prev, err := k.store.PairHealth(ctx, p.ID); err == nil {
		if prev.Master.Addr == p.Master {
			h.Master = prev.Master
		}
		if prev.Replica.Addr == p.Replica {
			h.Replica = prev.Replica
		}
	} else if !errors.Is(err, metadb.ErrNotFound) && ctx.Err() == nil {
		log.Warn().Err(err).Msg("load pair health failed")
	}
	t := time.NewTicker(k.cfg.ProbeInterval)
	defer t.Stop()
	var lastWrite time.Time
	dirty, failing := true, false
	fw := failoverWatch{started: time.Now().UTC()}
	var rg replGuard
	for {
		if k.probePair(ctx, p, &h) {
			dirty = true
		}
		if ctx.Err() != nil {
			return
		}
		k.setHealth(h)
		k.checkFailover(ctx, p, &h, &fw, rg.fencedRun(p.Master), rg.fastPing(p.Master, h.Master.RunID))
		if err := k.guardReplication(ctx, p, &h, &rg, &fw); err != nil && ctx.Err() == nil {
			if err.Error() != rg.lastErr {
				log.Warn().Err(err).Msg("replication guard failed, will retry")
			}
			rg.lastErr = err.Error()
		} else {
			rg.lastErr = ""
		}
		if (dirty || time.Since(lastWrite) >= k.cfg.ReportInterval) && k.leased() {
			h.Keeper, h.At = k.cfg.ID, time.Now().UTC()
			if err := k.store.SetPairHealth(ctx, &h); err != nil {
				if ctx.Err() == nil && !failing {
					log.Warn().Err(err).Msg("write pair health failed")
				}
				failing = true
			} else {
				lastWrite, dirty, failing = time.Now(), false, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probePair probes the pair's two servers at once and folds the results
// into h. It returns whether anything worth reporting at once changed.
func (k *Keeper) probePair(ctx context.Context, p metadb.Pair, h *metadb.PairHealth) bool {
	type result struct {
		info *serverInfo
		err  error
	}
	var m, r result
	var wg sync.WaitGroup
	wg.Add(2)
	mt := masterProbeTimeout(h.Master, k.cfg.ProbeTimeout, k.cfg.ProbeInterval, k.cfg.DetectTime, time.Now())
	go func() { defer wg.Done(); m.info, m.err = k.timedProbe(ctx, p.ID, roleMaster, p.Master, mt) }()
	go func() {
		defer wg.Done()
		r.info, r.err = k.timedProbe(ctx, p.ID, roleReplica, p.Replica, k.cfg.ProbeTimeout)
	}()
	wg.Wait()
	now := time.Now().UTC()
	var mc, rc bool
	h.Master, mc = observe(h.Master, p.Master, m.info, m.err, now)
	h.Replica, rc = observe(h.Replica, p.Replica, r.info, r.err, now)
	pairView(h, m.info)
	return mc || rc
}

// masterProbeTimeout bounds the probe of a master. A master already seen
// down is probed with the shorter of the probe timeout and the probe
// interval, and never past the end of its detection time: a hung master
// (its connections open, probes unanswered) is then decided on as soon as
// a dead one, instead of a probe timeout late.
func masterProbeTimeout(m metadb.NodeHealth, timeout, interval, detect time.Duration, now time.Time) time.Duration {
	if m.Up || m.Addr == "" {
		return timeout
	}
	t := min(timeout, interval)
	if !m.LastOK.IsZero() {
		if left := m.LastOK.Add(detect).Sub(now); left > 10*time.Millisecond && left < t {
			t = left
		}
	}
	return t
}

// timedProbe is probe, counted in the metrics of pair's server in role
// (a pair without a replica, and a probe cut short by ctx, are not).
func (k *Keeper) timedProbe(ctx context.Context, pair, role, addr string, timeout time.Duration) (*serverInfo, error) {
	start := time.Now()
	in, err := k.probe(ctx, addr, timeout)
	if addr != "" && ctx.Err() == nil {
		k.metrics.probed(pair, role, time.Since(start), err)
	}
	return in, err
}

// probe sends PING and INFO server+replication to one server within
// timeout (at most the probe timeout).
func (k *Keeper) probe(ctx context.Context, addr string, timeout time.Duration) (*serverInfo, error) {
	if addr == "" {
		return nil, errors.New("no server")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var info *redis.StringCmd
	_, err := k.backends.prober(addr).Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Ping(ctx)
		info = p.Info(ctx, "server", "replication")
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", addr, err)
	}
	in := parseInfo(info.Val())
	return &in, nil
}

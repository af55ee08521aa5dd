// Package keeper is the agent beside the Redis servers. It holds a lease in
// metadb, watches the pairs the master assigns to it (PING and INFO on both
// servers, a health report per pair in metadb) and measures the memory of
// the tenant dbs on them, on their replicas, when proxies report writes and
// in a slow sweep. Everything it knows is rebuilt from metadb and the
// servers; killing it loses nothing.
package keeper

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Store is what the keeper needs of metadb.
type Store interface {
	Heartbeat(ctx context.Context, kind metadb.Kind, m metadb.Member, ttl time.Duration) error
	Deregister(ctx context.Context, kind metadb.Kind, id string) error
	Pairs(ctx context.Context, size string) ([]metadb.PairView, error)
	PairHealth(ctx context.Context, id string) (*metadb.PairHealth, error)
	SetPairHealth(ctx context.Context, h *metadb.PairHealth) error
	DB(ctx context.Context, tenant string, index int) (*metadb.DB, error)
	AllDBs(ctx context.Context) ([]*metadb.DB, error)
	DBSize(ctx context.Context, tenant string, index int) (*metadb.DBSize, error)
	RecordDBSize(ctx context.Context, m *metadb.DBSize) (*metadb.DB, error)
	Subscribe(ctx context.Context, sub metadb.Subscriber) error
	Version(ctx context.Context) (uint64, error)
	Publish(ctx context.Context, sender string, env *buspb.Envelope) error
	ActiveJobs(ctx context.Context) ([]*metadb.Job, error)
	UpdateJob(ctx context.Context, f *metadb.Fence, id string, fn func(*metadb.Job) error) (*metadb.Job, error)
	Pair(ctx context.Context, id string) (*metadb.Pair, error)
	Promote(ctx context.Context, pr metadb.Promotion) (*metadb.Pair, *metadb.Job, error)
	DropSpare(ctx context.Context, jobID, spare, why string) error
	LiveMembers(ctx context.Context, kind metadb.Kind) ([]*metadb.Member, error)
	ReplAuth(ctx context.Context, pair string) (*metadb.ReplAuth, error)
	SetReplAuth(ctx context.Context, pair string, ra *metadb.ReplAuth) error
	PendingKeyReports(ctx context.Context) ([]metadb.DBRef, error)
	ClaimKeyReport(ctx context.Context, tenant string, index int, keeper string, stale time.Duration) (*metadb.KeyReport, bool, error)
	UpdateKeyReport(ctx context.Context, tenant string, index int, keeper string, started time.Time, fn func(*metadb.KeyReport)) (*metadb.KeyReport, error)
	RefuseRestore(ctx context.Context, jobID, refusal, why string) (*metadb.Job, error)
}

// Keeper is one keeper process.
type Keeper struct {
	cfg      Config
	store    Store
	log      zerolog.Logger
	backends *backends
	sizing   sizing
	sched    *schedule
	started  time.Time
	steps    map[metadb.JobKind]map[metadb.Step]jobStep // see jobSteps
	metrics  *metrics
	maddr    atomic.Pointer[string]

	// leaseUntil is when the lease lapses if not renewed (unix nanos), as
	// the keeper knows it: the start of its last successful renewal plus
	// the ttl. Zero before the first.
	leaseUntil atomic.Int64
	// pairs is the current set of pairs assigned to this keeper.
	pairs atomic.Pointer[map[string]metadb.Pair]
	// pairsReady is closed after the first successful read of the pairs.
	pairsReady chan struct{}

	mu     sync.Mutex
	health map[string]metadb.PairHealth // pair id -> last report
	route  map[dbKey]string             // db -> pair serving it, from the sweep and route messages
	big    map[dbKey]bigKeySet          // db -> its certain stratum
	kick   chan struct{}                // asks the sweep loop for a sweep now
	// pairsKick asks the pairs loop to reread the pairs now (a failover
	// or a new replica changed a pair's servers).
	pairsKick chan struct{}
	// reportKick asks the key report loop to look for requests now.
	reportKick chan struct{}
}

// bigKeySet is a db's certain stratum, valid for the slot it was found in.
type bigKeySet struct {
	pair string
	slot int
	keys []string
}

// New returns a keeper; it does no I/O and starts nothing.
func New(cfg Config, store Store, log zerolog.Logger) (*Keeper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := &Keeper{
		cfg:        cfg,
		store:      store,
		log:        log.With().Str("keeper", cfg.ID).Logger(),
		backends:   newBackends(cfg.ProbeTimeout, 10*time.Second),
		sizing:     cfg.sizing(),
		sched:      newSchedule(cfg.MeasureGap),
		pairsReady: make(chan struct{}),
		health:     map[string]metadb.PairHealth{},
		route:      map[dbKey]string{},
		big:        map[dbKey]bigKeySet{},
		kick:       make(chan struct{}, 1),
		pairsKick:  make(chan struct{}, 1),
		reportKick: make(chan struct{}, 1),
	}
	empty := map[string]metadb.Pair{}
	k.pairs.Store(&empty)
	k.steps = k.jobSteps()
	k.metrics = newMetrics(k)
	return k, nil
}

// MetricsAddr is the address /metrics listens on: "" while Run has not
// listened yet, or when Config.MetricsAddr is empty.
func (k *Keeper) MetricsAddr() string {
	if a := k.maddr.Load(); a != nil {
		return *a
	}
	return ""
}

func (k *Keeper) sender() string { return "keeper/" + k.cfg.ID }

// Run registers the keeper, then watches its pairs and measures their dbs
// until ctx ends, serving /metrics if configured (it returns at once if it
// cannot listen there). At a clean shutdown it deregisters, so the master
// moves its pairs to another keeper at once instead of after the lease
// lapses. It returns nil when ctx ends; a Keeper runs once.
func (k *Keeper) Run(ctx context.Context) error {
	var mln net.Listener
	if k.cfg.MetricsAddr != "" {
		var err error
		if mln, err = metricshttp.Listen(k.cfg.MetricsAddr); err != nil {
			return err
		}
		a := mln.Addr().String()
		k.maddr.Store(&a)
	}
	defer k.backends.close()
	k.started = time.Now().UTC()
	k.log.Info().Dur("lease", k.cfg.LeaseTTL).Dur("probe_interval", k.cfg.ProbeInterval).
		Dur("sizing_sweep", k.cfg.SizingSweep).Msg("keeper running")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return k.leaseLoop(gctx) })
	g.Go(func() error { return k.pairsLoop(gctx) })
	g.Go(func() error { return k.busLoop(gctx) })
	g.Go(func() error { return k.sweepLoop(gctx) })
	g.Go(func() error { return k.jobsLoop(gctx) })
	g.Go(func() error { return k.keyReportLoop(gctx) })
	if mln != nil {
		g.Go(func() error { return metricshttp.Serve(gctx, mln, k.metrics.reg) })
	}
	for i := 0; i < k.cfg.MeasureWorkers; i++ {
		g.Go(func() error { return k.measureLoop(gctx) })
	}
	err := g.Wait()
	dctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if derr := k.store.Deregister(dctx, metadb.KindKeeper, k.cfg.ID); derr != nil {
		k.log.Warn().Err(derr).Msg("deregister failed")
	}
	return err
}

// leased says whether the keeper's lease still holds as far as it knows.
// A keeper without a lease may have lost its pairs to another keeper, so
// it stops writing reports and measurements until it renews.
func (k *Keeper) leased() bool {
	return time.Now().UnixNano() < k.leaseUntil.Load()
}

// leaseLoop registers the keeper and renews its lease every third of the
// ttl; failures are retried at the same pace and logged once per outage.
func (k *Keeper) leaseLoop(ctx context.Context) error {
	t := time.NewTicker(k.cfg.LeaseTTL / 3)
	defer t.Stop()
	failing := false
	for {
		start := time.Now()
		m := metadb.Member{ID: k.cfg.ID, Started: k.started}
		err := k.store.Heartbeat(ctx, metadb.KindKeeper, m, k.cfg.LeaseTTL)
		if err != nil && ctx.Err() == nil {
			k.metrics.leaseFailures.Inc()
		}
		switch {
		case err == nil:
			k.leaseUntil.Store(start.Add(k.cfg.LeaseTTL).UnixNano())
			if failing {
				k.log.Info().Msg("lease renewed")
			}
			failing = false
		case ctx.Err() == nil && !failing:
			k.log.Warn().Err(err).Msg("lease renewal failed")
			failing = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// myPairs is the current set of pairs assigned to this keeper.
func (k *Keeper) myPairs() map[string]metadb.Pair { return *k.pairs.Load() }

// watch is one running pair watcher.
type watch struct {
	pair   metadb.Pair
	cancel context.CancelFunc
	done   chan struct{}
}

// pairsLoop reads the pairs assigned to this keeper every PairsPoll and
// runs one watcher per pair; a pair whose servers change (a failover) gets
// a new watcher. It stops every watcher before it returns.
func (k *Keeper) pairsLoop(ctx context.Context) error {
	t := time.NewTicker(k.cfg.PairsPoll)
	defer t.Stop()
	running := map[string]*watch{}
	stop := func(id string) {
		w := running[id]
		w.cancel()
		<-w.done
		delete(running, id)
	}
	defer func() {
		for id := range running {
			stop(id)
		}
	}()
	ready := false
	for {
		pairs, err := k.store.Pairs(ctx, "")
		if err != nil {
			if ctx.Err() == nil {
				k.log.Warn().Err(err).Msg("list pairs failed")
			}
		} else {
			mine := map[string]metadb.Pair{}
			addrs := map[string]bool{}
			for _, p := range pairs {
				if p.Keeper == k.cfg.ID {
					mine[p.ID] = p.Pair
					addrs[p.Master], addrs[p.Replica] = true, true
				}
			}
			for id, w := range running {
				p, ok := mine[id]
				if !ok || p.Master != w.pair.Master || p.Replica != w.pair.Replica {
					stop(id)
					if !ok {
						k.log.Info().Str("pair", id).Msg("pair released")
						k.forgetHealth(id)
						k.metrics.forgetPair(id)
					}
				}
			}
			added := false
			for id, p := range mine {
				if _, ok := running[id]; !ok {
					added = true
					wctx, cancel := context.WithCancel(ctx)
					w := &watch{pair: p, cancel: cancel, done: make(chan struct{})}
					running[id] = w
					go func() {
						defer close(w.done)
						k.watchPair(wctx, p)
					}()
					k.log.Info().Str("pair", id).Str("master", p.Master).Str("replica", p.Replica).Msg("watching pair")
				}
			}
			k.pairs.Store(&mine)
			k.backends.retain(addrs)
			if added {
				k.kickSweep() // measure the new pairs' dbs soon, not a sweep later
			}
			if !ready {
				ready = true
				close(k.pairsReady)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.pairsKick:
		}
	}
}

// Health returns the latest report on a pair this keeper watches.
func (k *Keeper) Health(pair string) (metadb.PairHealth, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, ok := k.health[pair]
	return h, ok
}

func (k *Keeper) setHealth(h metadb.PairHealth) {
	k.mu.Lock()
	k.health[h.Pair] = h
	k.mu.Unlock()
}

func (k *Keeper) forgetHealth(pair string) {
	k.mu.Lock()
	delete(k.health, pair)
	k.mu.Unlock()
}

// busLoop follows the bus: proxies' heartbeats say which dbs were written,
// route messages say which pair serves a db. It resubscribes until ctx ends.
func (k *Keeper) busLoop(ctx context.Context) error {
	sub := metadb.Subscriber{
		Handle: k.handle,
		Resync: func(ctx context.Context) (uint64, error) {
			// Messages were lost, writes reports among them: measure every
			// db of ours soon, and relearn the routes.
			k.kickSweep()
			return k.store.Version(ctx)
		},
		OnError: func(err error) { k.log.Debug().Err(err).Msg("bus error") },
	}
	for {
		err := k.store.Subscribe(ctx, sub)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			k.log.Warn().Err(err).Msg("bus subscription failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// handle takes one bus message. It must not block: it only queues work.
func (k *Keeper) handle(_ context.Context, env *buspb.Envelope) {
	switch p := env.Payload.(type) {
	case *buspb.Envelope_Failover, *buspb.Envelope_NewReplica:
		k.kickPairs()
	case *buspb.Envelope_KeeperCommand:
		if c := p.KeeperCommand; c.GetKind() == metadb.KeyReportCommand && (c.GetKeeper() == "" || c.GetKeeper() == k.cfg.ID) {
			k.kickKeyReports()
		}
	case *buspb.Envelope_Heartbeat:
		hb := p.Heartbeat
		if hb.GetComponent() != buspb.Component_COMPONENT_PROXY {
			return
		}
		now := time.Now()
		mine := k.myPairs()
		for _, a := range hb.GetActivity() {
			if a.GetWrites() == 0 {
				continue
			}
			key := dbKey{tenant: a.GetTenant(), index: int(a.GetIndex())}
			k.mu.Lock()
			pair, known := k.route[key]
			k.mu.Unlock()
			if _, ours := mine[pair]; known && !ours {
				continue
			}
			k.sched.add(key, reasonWritten, now)
		}
	case *buspb.Envelope_RouteChanged:
		r := p.RouteChanged.GetRoute()
		if r == nil {
			return
		}
		key := dbKey{tenant: r.GetTenant(), index: int(r.GetIndex())}
		k.mu.Lock()
		if p.RouteChanged.GetRemoved() || r.GetPair() == "" {
			delete(k.route, key)
			delete(k.big, key)
		} else {
			k.route[key] = r.GetPair()
		}
		k.mu.Unlock()
	}
}

// errStale marks a measurement that no longer applies (the db moved or
// went away); it is not worth a warning.
var errStale = errors.New("stale measurement")

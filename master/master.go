// Package master is Granary's controller. It is stateless: everything it
// knows it reads from metadb, and everything it decides it writes there with
// its leader fence. Any number of masters may run; one leads (a lease in
// metadb), the others wait to take over and then resume every job from the
// step recorded in metadb.
package master

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/internal/defaults"
	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Config of a master. Zero durations take the defaults.
type Config struct {
	// ID names this master in the lease; default hostname-pid.
	ID string
	// LeaseTTL is how long the leader lease lasts without renewal: a
	// standby takes over at most this long (plus one StandbyPoll) after the
	// leader dies. Default 3s.
	LeaseTTL time.Duration
	// StandbyPoll is how often a standby tries to take the lease. Default
	// LeaseTTL/10.
	StandbyPoll time.Duration
	// JobPoll is how often the leader looks for new jobs. Default 100ms.
	JobPoll time.Duration
	// StepRetryMax caps the backoff between failed attempts of a step.
	// Default 5s.
	StepRetryMax time.Duration
	// BackendTimeout bounds each command the master sends to a pair's
	// Redis. Default 5s.
	BackendTimeout time.Duration
	// QuotaInterval is how often the leader compares measured sizes with
	// quotas and bans or releases writes. Default 200ms.
	QuotaInterval time.Duration
	// HoldTime is how long a resize may hold a db's writes at its cut-over:
	// the deadline proxies get. A hold that lapses before the switch is
	// renewed and the last changes applied again. Default 10s.
	HoldTime time.Duration
	// MetricsAddr serves /metrics on this address when not empty (port 0
	// picks a free one; see Master.MetricsAddr). Default "" (off).
	MetricsAddr string
	// Usage tunes the usage history and alerts (usage.go).
	Usage UsageConfig
	// DegradeAfter is how long a pair may go without a replica after a
	// failover before its confirmed dbs' writes are acknowledged without
	// one (degraded, shown to the tenants; degrade.go) instead of being
	// refused. Negative: never. Default 10s.
	DegradeAfter time.Duration
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		ID:             fmt.Sprintf("%s-%d", host, os.Getpid()),
		LeaseTTL:       3 * time.Second,
		JobPoll:        100 * time.Millisecond,
		StepRetryMax:   5 * time.Second,
		BackendTimeout: 5 * time.Second,
		QuotaInterval:  200 * time.Millisecond,
		HoldTime:       10 * time.Second,
		DegradeAfter:   10 * time.Second,
	}
}

// Validate checks the config and fills derived defaults.
func (c *Config) Validate() error {
	d := DefaultConfig()
	defaults.Fill(&c.ID, d.ID)
	defaults.Fill(&c.LeaseTTL, d.LeaseTTL)
	if c.LeaseTTL < 100*time.Millisecond {
		return fmt.Errorf("lease ttl %v is below 100ms", c.LeaseTTL)
	}
	if c.StandbyPoll == 0 {
		c.StandbyPoll = c.LeaseTTL / 10
	}
	defaults.Fill(&c.JobPoll, d.JobPoll)
	defaults.Fill(&c.StepRetryMax, d.StepRetryMax)
	defaults.Fill(&c.BackendTimeout, d.BackendTimeout)
	defaults.Fill(&c.QuotaInterval, d.QuotaInterval)
	defaults.Fill(&c.HoldTime, d.HoldTime)
	defaults.Fill(&c.DegradeAfter, d.DegradeAfter)
	return c.Usage.fill()
}

// Store is what the master needs of metadb.
type Store interface {
	AcquireLeader(ctx context.Context, id string, ttl time.Duration) (*metadb.Fence, bool, error)
	ReleaseLeader(ctx context.Context, f *metadb.Fence) error
	ActiveJobs(ctx context.Context) ([]*metadb.Job, error)
	Job(ctx context.Context, id string) (*metadb.Job, error)
	UpdateJob(ctx context.Context, f *metadb.Fence, id string, fn func(*metadb.Job) error) (*metadb.Job, error)
	SetReadOnly(ctx context.Context, f *metadb.Fence, sender, tenant string, index int, reason string) (*metadb.DB, error)
	EndRelease(ctx context.Context, f *metadb.Fence, jobID, why string) (*metadb.Job, error)
	DB(ctx context.Context, tenant string, index int) (*metadb.DB, error)
	AllDBs(ctx context.Context) ([]*metadb.DB, error)
	UpdateDB(ctx context.Context, f *metadb.Fence, sender, tenant string, index int, fn func(*metadb.DB) ([]*buspb.Envelope, error)) (*metadb.DB, error)
	UpdateDBAudited(ctx context.Context, f *metadb.Fence, sender, tenant string, index int, fn func(*metadb.DB) ([]*buspb.Envelope, *metadb.AuditEntry, error)) (*metadb.DB, error)
	Pair(ctx context.Context, id string) (*metadb.Pair, error)
	Pairs(ctx context.Context, size string) ([]metadb.PairView, error)
	UpdatePair(ctx context.Context, f *metadb.Fence, id string, fn func(*metadb.Pair) error) (*metadb.Pair, error)
	ReleaseSlot(ctx context.Context, f *metadb.Fence, jobID string) error
	Place(ctx context.Context, size pools.Size, exclude string, claim func(ctx context.Context, p *metadb.Pair) error) error
	ReserveResizeSlot(ctx context.Context, f *metadb.Fence, jobID string, pair *metadb.Pair) (*metadb.Job, error)
	AbortResize(ctx context.Context, f *metadb.Fence, jobID, why string) error
	FinishResize(ctx context.Context, f *metadb.Fence, jobID string) error
	// drain (master/drain.go)
	SlotOwners(ctx context.Context, pair string) (map[string]string, error)
	StartMove(ctx context.Context, tenant string, index int, size string, quota int64, jobID, toPair string) (*metadb.Job, error)
	AbortDrain(ctx context.Context, f *metadb.Fence, jobID, why string) error
	FinishDrain(ctx context.Context, f *metadb.Fence, jobID string) error
	LiveMembers(ctx context.Context, kind metadb.Kind) ([]*metadb.Member, error)
	Version(ctx context.Context) (uint64, error)
	TakeSpare(ctx context.Context, f *metadb.Fence, jobID string) (string, error)
	FinishReplace(ctx context.Context, f *metadb.Fence, jobID string) error
	Demoted(ctx context.Context) ([]string, error)
	ReclaimDemoted(ctx context.Context, f *metadb.Fence, addr string) error
	// degraded writes (master/degrade.go)
	SetWritesDegraded(ctx context.Context, f *metadb.Fence, pair string, degraded bool) (bool, error)
	Spares(ctx context.Context) ([]string, error)
	usageStore
}

// Master is one controller process.
type Master struct {
	cfg      Config
	store    Store
	log      zerolog.Logger
	backends *backends
	steps    map[metadb.JobKind]map[metadb.Step]stepFunc // see jobSteps
	metrics  *metrics
	maddr    atomic.Pointer[string]
	// Alert delivery (alerts.go): the dial guard, the addresses already
	// denied in it (touched by the delivery loop only), and its wake-up.
	guard     *netguard.Guard
	denied    map[string]bool
	alertWake chan struct{}
}

// New returns a master; it does no I/O and starts nothing.
func New(cfg Config, store Store, log zerolog.Logger) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	guard, err := netguard.New(cfg.Usage.WebhookAllow)
	if err != nil {
		return nil, err
	}
	m := &Master{cfg: cfg, store: store, log: log.With().Str("master", cfg.ID).Logger(), backends: newBackends(cfg.BackendTimeout),
		guard: guard, denied: map[string]bool{}, alertWake: make(chan struct{}, 1)}
	m.steps = m.jobSteps()
	m.metrics = newMetrics(store)
	return m, nil
}

// MetricsAddr is the address /metrics listens on: "" while Run has not
// listened yet, or when Config.MetricsAddr is empty.
func (m *Master) MetricsAddr() string {
	if a := m.maddr.Load(); a != nil {
		return *a
	}
	return ""
}

func (m *Master) sender() string { return "master/" + m.cfg.ID }

// Run serves /metrics if configured (it returns at once if it cannot
// listen there), campaigns for the lease and, while it leads, runs the jobs
// and the periodic decisions. It blocks until ctx ends, then gives the
// lease up so a standby takes over at once, and returns nil.
func (m *Master) Run(ctx context.Context) error {
	if m.cfg.MetricsAddr == "" {
		return m.campaign(ctx)
	}
	ln, err := metricshttp.Listen(m.cfg.MetricsAddr)
	if err != nil {
		return err
	}
	a := ln.Addr().String()
	m.maddr.Store(&a)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return metricshttp.Serve(gctx, ln, m.metrics.reg) })
	g.Go(func() error { return m.campaign(gctx) })
	return g.Wait()
}

// campaign is Run without /metrics.
func (m *Master) campaign(ctx context.Context) error {
	defer m.backends.close()
	poll := time.NewTicker(m.cfg.StandbyPoll)
	defer poll.Stop()
	for {
		f, ok, err := m.store.AcquireLeader(ctx, m.cfg.ID, m.cfg.LeaseTTL)
		if err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("lease attempt failed")
		}
		if ok {
			m.log.Info().Int64("token", f.Token).Msg("leading")
			m.metrics.isLeader.Set(1)
			err := m.lead(ctx, f)
			m.metrics.isLeader.Set(0)
			if ctx.Err() != nil {
				rctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = m.store.ReleaseLeader(rctx, f)
				cancel()
				return nil
			}
			m.log.Warn().Err(err).Msg("lost leadership")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		}
	}
}

var errLostLease = errors.New("lease lost")

// lead runs the leader's work until the lease is lost or ctx ends.
func (m *Master) lead(ctx context.Context, f *metadb.Fence) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return m.keepLease(gctx, f) })
	g.Go(func() error { return m.jobLoop(gctx, f) })
	g.Go(func() error { return m.every(gctx, f, m.cfg.LeaseTTL/3, "assign pairs failed", m.assignPairs) })
	g.Go(func() error { return m.every(gctx, f, m.cfg.QuotaInterval, "quota pass failed", m.applyQuotas) })
	g.Go(func() error { return m.every(gctx, f, m.cfg.Usage.Interval, "usage sample failed", m.usageSampler()) })
	g.Go(func() error { return m.deliverAlerts(gctx, f) })
	g.Go(func() error {
		return m.every(gctx, f, reclaimInterval, "reclaim demoted masters failed", m.reclaimDemoted)
	})
	g.Go(func() error { return m.every(gctx, f, degradeInterval, "degraded writes pass failed", m.degradeWrites) })
	return g.Wait()
}

// keepLease renews the lease every third of its ttl. It returns
// errLostLease when another master holds it, or when renewals kept failing
// for a whole ttl (then the lease may have lapsed and someone else may lead).
func (m *Master) keepLease(ctx context.Context, f *metadb.Fence) error {
	t := time.NewTicker(m.cfg.LeaseTTL / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		g, ok, err := m.store.AcquireLeader(ctx, m.cfg.ID, m.cfg.LeaseTTL)
		switch {
		case err != nil:
			m.metrics.leaseFailures.Inc()
			if time.Since(lastOK) >= m.cfg.LeaseTTL {
				return fmt.Errorf("%w: %v", errLostLease, err)
			}
		case !ok || g.Token != f.Token:
			m.metrics.leaseFailures.Inc()
			return errLostLease
		default:
			m.metrics.leaseRenewals.Inc()
			lastOK = time.Now()
		}
	}
}

// every runs pass now and then at each interval until ctx ends (it returns
// nil) or a pass finds the fence refused (it returns ErrNotLeader). Other
// errors are logged as failed and the pass runs again at the next tick.
func (m *Master) every(ctx context.Context, f *metadb.Fence, interval time.Duration, failed string, pass func(context.Context, *metadb.Fence) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := pass(ctx, f); err != nil {
			if errors.Is(err, metadb.ErrNotLeader) {
				return err
			}
			if ctx.Err() == nil {
				m.log.Warn().Err(err).Msg(failed)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// jobLoop starts a runner for every active job that has none.
func (m *Master) jobLoop(ctx context.Context, f *metadb.Fence) error {
	var mu sync.Mutex
	running := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(m.cfg.JobPoll)
	defer t.Stop()
	for {
		jobs, err := m.store.ActiveJobs(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("list jobs failed")
		}
		for _, j := range jobs {
			mu.Lock()
			if running[j.ID] {
				mu.Unlock()
				continue
			}
			running[j.ID] = true
			mu.Unlock()
			wg.Add(1)
			gauge := m.metrics.jobsRunning.WithLabelValues(string(j.Kind))
			gauge.Inc()
			go func(id string) {
				defer wg.Done()
				defer gauge.Dec()
				m.runJob(ctx, f, id)
				mu.Lock()
				delete(running, id)
				mu.Unlock()
			}(j.ID)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

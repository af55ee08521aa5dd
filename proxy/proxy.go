package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Store is what the proxy needs of metadb.
type Store interface {
	Routes(ctx context.Context) (uint64, []*buspb.Route, error)
	Tenants(ctx context.Context) ([]*metadb.Tenant, error)
	Tenant(ctx context.Context, name string) (*metadb.Tenant, error)
	DB(ctx context.Context, tenant string, index int) (*metadb.DB, error)
	Pair(ctx context.Context, id string) (*metadb.Pair, error)
	Subscribe(ctx context.Context, sub metadb.Subscriber) error
	Heartbeat(ctx context.Context, kind metadb.Kind, m metadb.Member, ttl time.Duration) error
	Deregister(ctx context.Context, kind metadb.Kind, id string) error
	Publish(ctx context.Context, sender string, env *buspb.Envelope) error
	PublishHotKeys(ctx context.Context, proxy string, hs []metadb.HotKeys, ttl time.Duration) error
}

// Proxy is the tenants' RESP endpoint. Create it with New and run it with
// Run, or with Serve on a listener of your own.
type Proxy struct {
	cfg   Config
	store Store
	log   zerolog.Logger

	snap  atomic.Pointer[snapshot]
	table atomic.Pointer[cmdTable]
	boot  *cmdTable

	authLimits, unauthLimits limits

	groupsMu     sync.Mutex
	groups       map[groupKey]*group
	statesMu     sync.Mutex
	states       map[dbKey]*dbState
	tenantStates map[string]*tenantState
	noDB         *dbState
	hotDBs       atomic.Int64 // dbs with a hot-key summary (hotkeys.go)

	clientsMu sync.Mutex
	clients   map[*client]struct{}
	nclients  atomic.Int64
	nextID    atomic.Uint64
	clientWG  sync.WaitGroup

	connsMu   sync.Mutex
	conns     map[*bconn]struct{}
	backendWG sync.WaitGroup

	// draining is set once the drain has begun: blocked commands are
	// ended as timeouts. abandon is closed when
	// the drain's time is up: writes still held by a resize hold give up.
	// closing is set once backends are being closed: no new backend
	// connection is made.
	draining atomic.Bool
	abandon  chan struct{}
	closing  atomic.Bool
	fenceAt  atomic.Int64
	applied  atomic.Uint64
	started  time.Time

	hbKick    chan struct{}
	tableKick chan struct{}
	// tableReady is closed once the first command table is loaded.
	tableReady     chan struct{}
	tableReadyOnce sync.Once
	ackMu          sync.Mutex
	ackPending     map[dbKey]uint64 // dbs whose writes an acknowledgement waits for → version
	lookupSem      chan struct{}
	subs           psRegistry // subscribed clients by db (pubsub_move.go)

	ready    chan struct{}
	addr     string
	maddr    atomic.Pointer[string]
	metrics  *metrics
	readyErr error
}

// New returns a Proxy for cfg, reading state from store. It validates cfg,
// and does no I/O and starts nothing.
func New(cfg Config, store Store, log zerolog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("proxy: nil store")
	}
	p := &Proxy{
		cfg: cfg, store: store, log: log,
		authLimits:   limits{maxMultibulk: cfg.MaxMultibulk, maxBulk: cfg.MaxBulk, maxInline: cfg.MaxInline},
		unauthLimits: limits{maxMultibulk: cfg.MaxUnauthMultibulk, maxBulk: cfg.MaxUnauthBulk, maxInline: 1024},
		groups:       map[groupKey]*group{},
		states:       map[dbKey]*dbState{},
		tenantStates: map[string]*tenantState{},
		noDB:         &dbState{label: "none"},
		clients:      map[*client]struct{}{},
		conns:        map[*bconn]struct{}{},
		abandon:      make(chan struct{}),
		hbKick:       make(chan struct{}, 1),
		tableKick:    make(chan struct{}, 1),
		tableReady:   make(chan struct{}),
		ackPending:   map[dbKey]uint64{},
		lookupSem:    make(chan struct{}, 4),
		ready:        make(chan struct{}),
	}
	p.snap.Store(emptySnapshot())
	p.boot = bootTable()
	p.metrics = newMetrics(p)
	return p, nil
}

// bootTable serves the commands the proxy answers itself until the backend
// command table is loaded.
func bootTable() *cmdTable {
	t := &cmdTable{m: map[string]*cmdSpec{}}
	for name, h := range localHandlers() {
		if base, sub, ok := cutSub(name); ok {
			parent := t.m[base]
			if parent == nil {
				parent = &cmdSpec{name: base, arity: -2, subs: map[string]*cmdSpec{}}
				t.m[base] = parent
			}
			parent.subs[sub] = &cmdSpec{name: name, arity: -2, kind: kLocal, local: h, class: classLocal}
			continue
		}
		t.m[name] = &cmdSpec{name: name, arity: -1, kind: kLocal, local: h, class: classLocal}
	}
	return t
}

func cutSub(name string) (string, string, bool) {
	for i := 0; i < len(name); i++ {
		if name[i] == '|' {
			return name[:i], name[i+1:], true
		}
	}
	return name, "", false
}

// lookup resolves a command in the loaded table, or in the boot table.
func (p *Proxy) lookup(args [][]byte) (*cmdSpec, error) {
	if t := p.table.Load(); t != nil {
		return t.lookup(args)
	}
	s, err := p.boot.lookup(args)
	if err == nil {
		return s, nil
	}
	// The first route may have just arrived: ask for the table now and
	// give the load a moment rather than failing the tenant's first command.
	select {
	case p.tableKick <- struct{}{}:
	default:
	}
	t := time.NewTimer(tableWait)
	defer t.Stop()
	select {
	case <-p.tableReady:
		return p.table.Load().lookup(args)
	case <-t.C:
		return nil, fmt.Errorf("'%.64s': %w", args[0], ErrStarting)
	}
}

// tableWait bounds how long a command waits for the first command table.
const tableWait = 2 * time.Second

// Ready is closed once the proxy listens (or failed to); Addr is then the
// address it listens on.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Addr is the listening address, valid after Ready.
func (p *Proxy) Addr() string { return p.addr }

// metricsAddr is where /metrics listens, "" if nowhere.
func (p *Proxy) metricsAddr() string {
	if a := p.maddr.Load(); a != nil {
		return *a
	}
	return ""
}

// Run listens on cfg.Addr and then is Serve. If it cannot listen it
// returns that error (Ready is closed, with nothing listening).
func (p *Proxy) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		p.notReady(err)
		return fmt.Errorf("listen %s: %w", p.cfg.Addr, err)
	}
	return p.Serve(ctx, ln)
}

// Serve serves tenants on ln, follows metadb and keeps the lease until ctx
// ends. Then it drains, as a lameduck: it closes ln, so new connections
// are refused, and lets every command it has read finish, for at most
// DrainTimeout, while the lease is renewed and the bus and the watchdog
// keep running, so that writes held by a resize hold are released by the
// hold's end, confirmed writes get their replica's acknowledgement, and
// no write is fenced for the drain's sake. Only then does it stop
// following metadb, close its backend connections and deregister.
//
// A control loop that fails (the bus subscription ending) stops the
// others and starts the drain too; writes then end with the lease, as
// self-fencing has it. Serve returns that failure, or nil after a drain;
// it takes ownership of ln. Run or Serve may be called once.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	p.addr = ln.Addr().String()
	if p.cfg.Advertise == p.cfg.Addr {
		p.cfg.Advertise = p.addr
	}
	var mln net.Listener
	if p.cfg.MetricsAddr != "" {
		var err error
		if mln, err = net.Listen("tcp", p.cfg.MetricsAddr); err != nil {
			ln.Close()
			p.notReady(err)
			return fmt.Errorf("listen metrics %s: %w", p.cfg.MetricsAddr, err)
		}
		a := mln.Addr().String()
		p.maddr.Store(&a)
	}
	p.started = time.Now().UTC()
	close(p.ready)
	p.log.Info().Str("addr", p.addr).Str("id", p.cfg.ID).Msg("proxy listening")

	// The control loops outlive ctx by the drain: their context ends
	// only after it.
	ctl, stopCtl := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCtl()
	g, gctx := errgroup.WithContext(ctl)
	g.Go(func() error {
		err := p.store.Subscribe(gctx, metadb.Subscriber{Handle: p.handle, Resync: p.resync,
			OnError: func(err error) { p.log.Warn().Err(err).Msg("bus") }})
		if err == nil && gctx.Err() == nil {
			err = errors.New("bus subscription ended")
		}
		return err
	})
	g.Go(func() error { return p.heartbeatLoop(gctx) })
	g.Go(func() error { return p.activityLoop(gctx) })
	g.Go(func() error { return p.watchdog(gctx) })
	g.Go(func() error { return p.tableLoop(gctx) })
	g.Go(func() error { return p.hotLoop(gctx) })
	if mln != nil {
		srv := p.metricsServer()
		g.Go(func() error { return serveMetrics(gctx, srv, mln) })
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}

	actx, stopAccept := context.WithCancel(ctx)
	defer stopAccept()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		p.accept(actx, ln)
	}()
	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a control loop failed
	}
	stopAccept()
	ln.Close()
	<-accepted // so every connection admitted is one that drain sees
	p.drain()
	stopCtl()
	err := g.Wait()
	p.closeBackends()
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if derr := p.store.Deregister(dctx, metadb.KindProxy, p.cfg.ID); derr != nil {
		p.log.Warn().Err(derr).Msg("deregister failed")
	}
	p.log.Info().Msg("proxy stopped")
	return err
}

// notReady records why the proxy does not listen and closes Ready.
func (p *Proxy) notReady(err error) {
	p.readyErr = err
	close(p.ready)
}

// accept admits connections until ln is closed or ctx ends.
func (p *Proxy) accept(ctx context.Context, ln net.Listener) {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			p.log.Warn().Err(err).Msg("accept failed")
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
			_ = tc.SetKeepAlive(true)
		}
		if p.nclients.Load() >= int64(p.cfg.MaxClients) {
			_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = nc.Write(appendError(nil, ErrTooMany))
			nc.Close()
			continue
		}
		c := p.newClient(nc)
		p.clientsMu.Lock()
		p.clients[c] = struct{}{}
		p.nclients.Add(1)
		p.clientWG.Add(1)
		p.clientsMu.Unlock()
		go c.serve()
	}
}

func (p *Proxy) dropClient(c *client) {
	p.clientsMu.Lock()
	delete(p.clients, c)
	p.clientsMu.Unlock()
	p.nclients.Add(-1)
	p.clientWG.Done()
}

// drain waits, for at most DrainTimeout, until every client connection has
// finished the commands it has read and closed; the caller has stopped
// accepting. A connection reads nothing more once the drain begins. When
// the time is up, held writes give up, requests still waiting on a shared
// backend connection fail and the remaining connections are closed.
func (p *Proxy) drain() {
	p.clientsMu.Lock()
	p.draining.Store(true)
	select { // say so in the lease at once: the master places no new db here
	case p.hbKick <- struct{}{}:
	default:
	}
	for c := range p.clients {
		c.drain()
	}
	n := len(p.clients)
	p.clientsMu.Unlock()
	p.log.Info().Int("clients", n).Msg("proxy draining")
	done := make(chan struct{})
	go func() { p.clientWG.Wait(); close(done) }()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	p.log.Warn().Int64("clients", p.nclients.Load()).Msg("drain timeout; closing remaining connections")
	close(p.abandon)
	p.closing.Store(true)
	p.clientsMu.Lock()
	for c := range p.clients {
		c.nc.Close()
	}
	p.clientsMu.Unlock()
	p.failShared(ErrShutdown)
	<-done
}

// closeBackends closes every backend connection once no client is left.
func (p *Proxy) closeBackends() {
	p.closing.Store(true)
	p.failShared(ErrShutdown)
	p.groupsMu.Lock()
	for _, g := range p.groups {
		g.mu.Lock()
		for _, d := range g.idle {
			d.nc.Close()
		}
		g.idle = nil
		g.mu.Unlock()
	}
	p.groupsMu.Unlock()
	p.backendWG.Wait()
}

// failShared fails every shared backend connection, completing the
// requests they hold with err.
func (p *Proxy) failShared(err error) {
	p.groupsMu.Lock()
	defer p.groupsMu.Unlock()
	for _, g := range p.groups {
		for i := range g.conns {
			if c := g.conns[i].Load(); c != nil {
				c.fail(err)
			}
		}
	}
}

// goBackend runs a backend connection's goroutine, tracked for shutdown.
func (p *Proxy) goBackend(fn func()) {
	p.backendWG.Add(1)
	go func() {
		defer p.backendWG.Done()
		fn()
	}()
}

func (p *Proxy) registerConn(c *bconn) {
	p.connsMu.Lock()
	p.conns[c] = struct{}{}
	p.connsMu.Unlock()
}

func (p *Proxy) unregisterConn(c *bconn) {
	p.connsMu.Lock()
	delete(p.conns, c)
	p.connsMu.Unlock()
}

// clock is a coarse time for stamps on the request path.
var clock atomic.Int64

func init() { clock.Store(time.Now().UnixNano()) }

func coarseNow() int64 { return clock.Load() }

// watchdog keeps the coarse clock and drops shared backend connections that
// stopped answering, which fails their requests instead of hanging clients.
func (p *Proxy) watchdog(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	limit := p.cfg.BackendTimeout + p.cfg.ConfirmTimeout
	n := 0
	// stalled: the backends last found stalled, so a newly stalled one is
	// reported by a heartbeat at once rather than at the next interval.
	var stalled map[string]time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			clock.Store(now.UnixNano())
			if n++; n%10 != 0 {
				continue
			}
			if n%3000 == 0 {
				p.retireGroups(now)
			}
			st := p.backendStalled(now.UnixNano())
			for a := range st {
				if _, ok := stalled[a]; !ok {
					select {
					case p.hbKick <- struct{}{}:
					default:
					}
					break
				}
			}
			stalled = st
			var stale []*bconn
			p.connsMu.Lock()
			for c := range p.conns {
				if c.stale(now.UnixNano(), limit) {
					stale = append(stale, c)
				}
			}
			p.connsMu.Unlock()
			for _, c := range stale {
				p.metrics.backendErrors.WithLabelValues(c.g.addr, "timeout").Inc()
				c.fail(fmt.Errorf("no reply within %s", limit))
			}
		}
	}
}

// retireGroups closes backend groups that no route has named for a minute
// (a resized or dropped db's old slot), so their connections do not linger.
func (p *Proxy) retireGroups(now time.Time) {
	used := map[*group]bool{}
	for _, d := range p.snap.Load().dbs {
		used[d.master], used[d.replica], used[d.script] = true, true, true
	}
	var old []*group
	p.groupsMu.Lock()
	for k, g := range p.groups {
		switch {
		case used[g]:
			g.unused = time.Time{}
		case g.unused.IsZero():
			g.unused = now
		case now.Sub(g.unused) > time.Minute:
			old = append(old, g)
			delete(p.groups, k)
		}
	}
	p.groupsMu.Unlock()
	for _, g := range old {
		g.retire()
	}
}

// tableLoop loads the command table from a backend once one is known.
func (p *Proxy) tableLoop(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for p.table.Load() == nil {
		s := p.snap.Load()
		for _, d := range s.dbs {
			if err := p.loadTable(ctx, d.route.Master); err != nil {
				p.log.Warn().Err(err).Str("backend", d.route.Master).Msg("command table not loaded")
				continue
			}
			break
		}
		if p.table.Load() != nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-p.tableKick:
		}
	}
	return nil
}

func (p *Proxy) loadTable(ctx context.Context, addr string) error {
	raw, err := p.adminCall(ctx, addr, "COMMAND")
	if err != nil {
		return err
	}
	cmds, err := parseCommandReply(raw)
	if err != nil {
		return err
	}
	p.table.Store(buildTable(cmds))
	p.tableReadyOnce.Do(func() { close(p.tableReady) })
	p.log.Info().Str("backend", addr).Int("commands", len(cmds)).Msg("command table loaded")
	return nil
}

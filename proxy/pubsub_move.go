package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// How a subscribed client follows its db across moves.
//
// A subscribed client has one backend connection, its current leg, on the
// db's master. While a resize holds the db's writes (PUBLISH included) and
// the hold names the target master, the client gets a second, standby leg
// there, subscribed to the same channels and patterns (confirmed by a PING
// behind them) before this proxy acknowledges the hold's version: the
// master switches only after every live proxy has. Then, since nothing is
// published through Granary during the hold, every message published
// before it arrives on the current leg, every message published after the
// switch (by any proxy) on the standby leg. At the switch the standby leg
// becomes current; what it receives is relayed only once the old leg has
// delivered everything it had (a PING drains it), so order is kept, and
// the old leg is closed. A client's (UN)SUBSCRIBE during the hold goes to
// both legs, the standby's confirmed first.
//
// A route change that the client was not prepared for (a failover, a move
// whose hold lapsed or whose pre-subscription failed, a dropped db), or a
// leg that breaks, ends the client's connection after an error reply
// "-ERR … resubscribe": a client may miss messages only when it is told.
// A standby leg of a hold that lapses or is aborted is closed: a client
// has at most two legs.

// Pongs owed on a leg, in the order their PINGs were sent.
type pongKind int

const (
	pongTenant  pongKind = iota // the tenant's PING: relayed
	pongProbe                   // "still subscribed?" before a normal command
	pongSync                    // everything sent before it is confirmed
	pongDrain                   // the old leg at a switch: delivered all it had
	pongPromote                 // the new leg at a switch: confirmations are relayed from here
)

type pongWait struct {
	kind pongKind
	ch   chan struct{} // pongSync: closed when it arrives
	succ *psLeg        // pongDrain: the leg whose relay it opens
}

// Leg roles.
const (
	legStandby  int32 = iota // subscribed on a hold's target, relays only after the switch
	legCurrent               // the client's subscriptions
	legDraining              // replaced at a switch, delivering what it has left
)

// maxHeldPush bounds what a standby leg keeps for its client before the
// old leg has drained (messages published by a proxy that switched
// already): beyond it the client is told to resubscribe.
const maxHeldPush = 8 << 20

// psLeg is one backend connection carrying a client's subscriptions.
type psLeg struct {
	ps   *psState
	d    *dconn
	addr string
	db   int
	pair string
	role atomic.Int32

	pmu   sync.Mutex
	pongs []pongWait

	quiet bool // reader only: confirmations are the current leg's to relay

	gmu       sync.Mutex
	open      bool // relays go to the tenant; else they are held
	held      [][]byte
	heldBytes int

	closing atomic.Bool // closed on purpose: its reader ends silently
	done    chan struct{}
}

// psState is a connection in subscribed mode.
type psState struct {
	c       *client
	p       *Proxy
	key     dbKey
	prefix  string
	gprefix string // prefix with glob characters escaped, for patterns

	// mu guards the legs and the subscription sets; it is held while
	// commands are written to the legs, so that pongs match their PINGs.
	mu    sync.Mutex
	cur   *psLeg
	next  *psLeg
	legs  []*psLeg // every leg not yet waited for
	chans map[string]struct{}
	pats  map[string]struct{}

	probe chan bool

	outMu sync.Mutex
	over  bool // the tenant was told to resubscribe: nothing more goes out

	latest   atomic.Pointer[dbRoute] // the newest route offered (psRegistry)
	offered  bool                    // under psRegistry.mu: latest was set
	wake     chan struct{}
	quit     chan struct{}
	quitOnce sync.Once
	worked   chan struct{}
}

// psRegistry knows the subscribed clients of each db, so that a new route
// reaches them, and which of them still prepare for a hold (the proxy
// acknowledges the hold only after they have).
type psRegistry struct {
	mu      sync.Mutex
	byDB    map[dbKey]map[*psState]struct{}
	pending map[*psState]*dbRoute

	semOnce sync.Once
	sem     chan struct{} // bounds the standby legs being dialled at once
}

// maxPrepares bounds the standby legs one proxy dials at once for a hold.
const maxPrepares = 32

func (reg *psRegistry) dialSem() chan struct{} {
	reg.semOnce.Do(func() { reg.sem = make(chan struct{}, maxPrepares) })
	return reg.sem
}

// errSubGone: the subscription ended (the tenant left, was told to
// resubscribe, or the backend went away).
var errSubGone = errors.New("subscription ended")

// startSubscribed puts c in subscribed mode on the route of its db in the
// newest snapshot: it dials the current leg (and the standby leg when a
// hold names a target) before returning.
func (p *Proxy) startSubscribed(c *client) (*psState, error) {
	k := dbKey{c.tenant, c.index}
	ps := &psState{c: c, p: p, key: k, chans: map[string]struct{}{}, pats: map[string]struct{}{},
		probe: make(chan bool, 1), wake: make(chan struct{}, 1), quit: make(chan struct{}), worked: make(chan struct{})}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	// Registered and the route read under the registry's lock, which
	// publish holds across its swap: no route change passes unseen.
	p.subs.mu.Lock()
	if p.subs.byDB == nil {
		p.subs.byDB, p.subs.pending = map[dbKey]map[*psState]struct{}{}, map[*psState]*dbRoute{}
	}
	if p.subs.byDB[k] == nil {
		p.subs.byDB[k] = map[*psState]struct{}{}
	}
	p.subs.byDB[k][ps] = struct{}{}
	db := p.snap.Load().dbs[k]
	ps.latest.Store(db)
	ps.offered = true
	p.subs.mu.Unlock()
	fail := func(err error) (*psState, error) {
		p.subs.remove(ps)
		return nil, err
	}
	if db == nil {
		return fail(fmt.Errorf("db %d %w", c.index, ErrNoRoute))
	}
	ps.prefix, ps.gprefix = db.pubsub, escapeGlob(db.pubsub)
	l, err := ps.dialLeg(db.route.Master, int(db.route.Db), db.route.Pair, legCurrent)
	if err != nil {
		return fail(err)
	}
	ps.cur = l
	if h := db.hold; liveTarget(h) {
		// A failure leaves no standby leg: the switch then tells the
		// client to resubscribe.
		_ = ps.prepareLocked(h.target, h.targetDB, "")
	}
	go ps.work()
	return ps, nil
}

func liveTarget(h *hold) bool {
	return h != nil && h.target != "" && time.Now().Before(h.deadline)
}

// dialLeg opens a leg and starts its reader. Called with ps.mu held.
func (ps *psState) dialLeg(addr string, db int, pair string, role int32) (*psLeg, error) {
	g := ps.p.group(addr, db, ps.p.cfg.TenantUser)
	d, err := g.dedicated(context.Background())
	if err != nil {
		return nil, err
	}
	l := &psLeg{ps: ps, d: d, addr: addr, db: db, pair: pair, done: make(chan struct{})}
	l.role.Store(role)
	l.quiet = role == legStandby
	l.open = role != legStandby
	live := ps.legs[:0]
	for _, o := range ps.legs {
		select {
		case <-o.done:
		default:
			live = append(live, o)
		}
	}
	ps.legs = append(live, l)
	go l.run()
	return l, nil
}

// subscribe sends a (P)(UN)SUBSCRIBE (channels prefixed) to the legs: to
// the standby leg first, confirmed, then to the current one, whose
// confirmations the tenant gets.
func (ps *psState) subscribe(name string, args [][]byte) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	set := ps.chans
	if name[0] == 'p' {
		set = ps.pats
	}
	switch {
	case name == "subscribe" || name == "psubscribe":
		for _, a := range args[1:] {
			set[string(a)] = struct{}{}
		}
	case len(args) == 1:
		clear(set)
	default:
		for _, a := range args[1:] {
			delete(set, string(a))
		}
	}
	raw := appendCommand(nil, args...)
	if ps.next != nil {
		if err := ps.next.sync(raw); err != nil {
			ps.dropNextLocked()
		}
	}
	ps.cur.send(raw)
}

// ping sends a PING on the current leg.
func (ps *psState) ping(raw []byte, kind pongKind) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.cur.expect(pongWait{kind: kind})
	ps.cur.send(raw)
}

func (l *psLeg) expect(w pongWait) {
	l.pmu.Lock()
	l.pongs = append(l.pongs, w)
	l.pmu.Unlock()
}

func (l *psLeg) popPong() (pongWait, bool) {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if len(l.pongs) == 0 {
		return pongWait{}, false
	}
	w := l.pongs[0]
	l.pongs = l.pongs[1:]
	return w, true
}

func (l *psLeg) send(raw []byte) bool {
	_ = l.d.nc.SetWriteDeadline(time.Now().Add(l.ps.p.cfg.BackendTimeout))
	if _, err := l.d.nc.Write(raw); err != nil {
		_ = l.d.nc.Close()
		return false
	}
	return true
}

// sync sends raw and a PING and waits for the PING's reply: everything
// before it is then in effect on the server.
func (l *psLeg) sync(raw []byte) error {
	ch := make(chan struct{})
	l.expect(pongWait{kind: pongSync, ch: ch})
	if !l.send(appendCommandStr(raw, "PING")) {
		return fmt.Errorf("%w: %s: write failed", ErrBackend, l.addr)
	}
	t := time.NewTimer(l.ps.p.cfg.BackendTimeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-l.done:
		return fmt.Errorf("%w: %s: connection lost", ErrBackend, l.addr)
	case <-t.C:
		return fmt.Errorf("%w: %s: no reply within %s", ErrBackend, l.addr, l.ps.p.cfg.BackendTimeout)
	}
}

// close ends the leg and waits for its reader.
func (l *psLeg) close() {
	l.closing.Store(true)
	_ = l.d.nc.Close()
	<-l.done
}

// prepareLocked makes sure a standby leg on addr/db carries the client's
// subscriptions, confirmed. Called with ps.mu held.
func (ps *psState) prepareLocked(addr string, db int, pair string) error {
	if n := ps.next; n != nil && n.addr == addr && n.db == db && !n.closing.Load() {
		select {
		case <-n.done:
		default:
			return nil
		}
	}
	ps.dropNextLocked()
	if ps.cur.addr == addr && ps.cur.db == db {
		return nil
	}
	sem := ps.p.subs.dialSem()
	sem <- struct{}{}
	defer func() { <-sem }()
	l, err := ps.dialLeg(addr, db, pair, legStandby)
	if err != nil {
		return err
	}
	var raw []byte
	if len(ps.chans) > 0 {
		raw = appendCommand(raw, setArgs("SUBSCRIBE", ps.chans)...)
	}
	if len(ps.pats) > 0 {
		raw = appendCommand(raw, setArgs("PSUBSCRIBE", ps.pats)...)
	}
	if err := l.sync(raw); err != nil {
		l.close()
		return err
	}
	ps.next = l
	return nil
}

func setArgs(cmd string, set map[string]struct{}) [][]byte {
	args := make([][]byte, 0, len(set)+1)
	args = append(args, []byte(cmd))
	for s := range set {
		args = append(args, []byte(s))
	}
	return args
}

func (ps *psState) dropNextLocked() {
	if ps.next != nil {
		ps.next.close()
		ps.next = nil
	}
}

// promoteLocked switches to the standby leg: it relays confirmations from
// its next pong on, and relays anything once the old leg has drained.
func (ps *psState) promoteLocked() bool {
	old, nw := ps.cur, ps.next
	select {
	case <-nw.done:
		return false
	default:
	}
	nw.expect(pongWait{kind: pongPromote})
	if !nw.send(appendCommandStr(nil, "PING")) {
		return false
	}
	old.expect(pongWait{kind: pongDrain, succ: nw})
	old.role.Store(legDraining)
	nw.role.Store(legCurrent)
	ps.cur, ps.next = nw, nil
	if !old.send(appendCommandStr(nil, "PING")) {
		return false
	}
	ps.p.metrics.psFollowed.Inc()
	return true
}

// run relays the leg's messages to the tenant, stripping the prefix.
func (l *psLeg) run() {
	defer close(l.done)
	ps := l.ps
	for {
		raw, err := l.d.rr.next()
		if err != nil {
			if !l.closing.Load() && l.role.Load() != legStandby {
				ps.moved("lost", ErrSubLost)
			}
			return
		}
		v, _, err := parseValue(raw)
		if err != nil {
			if l.role.Load() != legStandby {
				ps.moved("lost", ErrSubLost)
			}
			return
		}
		if kind := pushKind(v); kind != "" {
			if l.quiet && kind != "message" && kind != "pmessage" {
				continue // the current leg confirms it to the tenant
			}
			ps.strip(&v)
			if !l.relay(appendValue(nil, v)) {
				ps.moved("lost", ErrSubLost)
				return
			}
			continue
		}
		w, ok := l.popPong()
		if !ok {
			if !l.quiet && !l.relay(append([]byte(nil), raw...)) {
				ps.moved("lost", ErrSubLost)
				return
			}
			continue
		}
		switch w.kind {
		case pongTenant:
			if !l.quiet && !l.relay(append([]byte(nil), raw...)) {
				ps.moved("lost", ErrSubLost)
				return
			}
		case pongProbe:
			still := v.t == '*'
			select {
			case ps.probe <- still:
			default:
			}
			if !still {
				return // a normal connection now: stop closes it
			}
		case pongSync:
			close(w.ch)
		case pongDrain:
			w.succ.openGate()
			l.closing.Store(true)
			_ = l.d.nc.Close()
			return
		case pongPromote:
			l.quiet = false
		}
	}
}

// pushKind names a push message (a delivery or a confirmation), "" if v is
// a reply.
func pushKind(v value) string {
	if v.t != '*' || len(v.elems) < 3 || v.elems[0].t != '$' {
		return ""
	}
	switch k := string(v.elems[0].str); k {
	case "message", "pmessage", "subscribe", "unsubscribe", "psubscribe", "punsubscribe":
		return k
	}
	return ""
}

// relay writes b to the tenant, or keeps it until the leg's gate opens.
// false: the tenant is gone (or was told to resubscribe).
func (l *psLeg) relay(b []byte) bool {
	l.gmu.Lock()
	if !l.open {
		defer l.gmu.Unlock()
		if l.heldBytes+len(b) > maxHeldPush {
			return false
		}
		l.held = append(l.held, b)
		l.heldBytes += len(b)
		return true
	}
	l.gmu.Unlock()
	return l.ps.out(b) == nil
}

// openGate relays what the leg kept, then lets it relay directly.
func (l *psLeg) openGate() {
	l.gmu.Lock()
	defer l.gmu.Unlock()
	for _, b := range l.held {
		if l.ps.out(b) != nil {
			break
		}
	}
	l.held, l.heldBytes, l.open = nil, 0, true
}

// out writes to the tenant unless it was told to resubscribe.
func (ps *psState) out(b []byte) error {
	ps.outMu.Lock()
	defer ps.outMu.Unlock()
	if ps.over {
		return errSubGone
	}
	if err := ps.c.write(b); err != nil {
		_ = ps.c.nc.Close()
		return err
	}
	return nil
}

// moved tells the tenant, once, that its subscriptions ended (err), counts
// it under reason, and closes the tenant's connection. It may block on a
// slow tenant for the write timeout: callers on shared paths run it in a
// goroutine of its own.
func (ps *psState) moved(reason string, err error) {
	ps.outMu.Lock()
	if ps.over {
		ps.outMu.Unlock()
		return
	}
	ps.over = true
	ps.p.metrics.psMoved.WithLabelValues(reason).Inc()
	_ = ps.c.write(appendError(nil, err))
	ps.outMu.Unlock()
	_ = ps.c.nc.Close()
}

func (ps *psState) isOver() bool {
	ps.outMu.Lock()
	defer ps.outMu.Unlock()
	return ps.over
}

// stop ends subscribed mode: every leg is closed (its subscriptions die
// with it) and every goroutine of the state has exited when stop returns.
func (ps *psState) stop() {
	ps.quitOnce.Do(func() { close(ps.quit) })
	ps.p.subs.remove(ps)
	<-ps.worked
	ps.mu.Lock()
	legs := ps.legs
	ps.legs, ps.cur, ps.next = nil, nil, nil
	ps.mu.Unlock()
	for _, l := range legs {
		l.close()
	}
}

// work follows the routes offered to the client until stop: it prepares a
// standby leg for a hold, switches to it when the route does, drops it
// when the hold goes, and tells the client to resubscribe on any other
// master change.
func (ps *psState) work() {
	defer close(ps.worked)
	lapse := time.NewTimer(time.Hour)
	lapse.Stop()
	defer lapse.Stop()
	for {
		select {
		case <-ps.quit:
			return
		case <-ps.wake:
		case <-lapse.C:
		}
		r := ps.latest.Load()
		ps.mu.Lock()
		until := ps.followLocked(r)
		ps.mu.Unlock()
		ps.p.subs.done(ps, r)
		lapse.Stop()
		if !until.IsZero() {
			lapse.Reset(time.Until(until) + 10*time.Millisecond)
		}
	}
}

// followLocked applies route r (nil: the db has none) to the legs and
// returns the deadline of the hold a standby leg was prepared for.
func (ps *psState) followLocked(r *dbRoute) time.Time {
	if ps.cur == nil || ps.isOver() {
		return time.Time{}
	}
	if r == nil {
		go ps.moved("dropped", ErrSubDropped)
		return time.Time{}
	}
	if r.route.Master != ps.cur.addr || int(r.route.Db) != ps.cur.db {
		if n := ps.next; n != nil && n.addr == r.route.Master && n.db == int(r.route.Db) && ps.promoteLocked() {
			n.pair = r.route.Pair
			return ps.followLocked(r) // a hold on the new route, however unlikely
		}
		reason, err := "move", ErrSubMoved
		if r.route.Pair == ps.cur.pair {
			reason, err = "failover", ErrSubFailover
		}
		go ps.moved(reason, err)
		return time.Time{}
	}
	if h := r.hold; liveTarget(h) {
		if err := ps.prepareLocked(h.target, h.targetDB, ""); err != nil {
			ps.p.log.Warn().Err(err).Str("db", ps.key.String()).Str("target", h.target).Msg("subscriber not subscribed on the resize target; it will be told to resubscribe")
			go ps.moved("move", ErrSubMoved)
			return time.Time{}
		}
		return h.deadline
	}
	ps.dropNextLocked()
	return time.Time{}
}

// offerSubs hands each subscribed client its db's route in s, before s is
// swapped in (publish holds subs.mu): a client whose route has a hold
// with a target is pending until it is prepared.
func (p *Proxy) offerSubs(s *snapshot) {
	for k, set := range p.subs.byDB {
		r := s.dbs[k]
		for ps := range set {
			if ps.latest.Load() == r && ps.offered {
				continue
			}
			ps.latest.Store(r)
			ps.offered = true
			if r != nil && liveTarget(r.hold) {
				p.subs.pending[ps] = r
			} else {
				delete(p.subs.pending, ps)
			}
			select {
			case ps.wake <- struct{}{}:
			default:
			}
		}
	}
}

// done records that ps has applied route r.
func (reg *psRegistry) done(ps *psState, r *dbRoute) {
	reg.mu.Lock()
	if reg.pending[ps] == r {
		delete(reg.pending, ps)
	}
	reg.mu.Unlock()
}

func (reg *psRegistry) remove(ps *psState) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if set := reg.byDB[ps.key]; set != nil {
		delete(set, ps)
		if len(set) == 0 {
			delete(reg.byDB, ps.key)
		}
	}
	delete(reg.pending, ps)
}

// waitSubs waits, before the lease renewal acknowledges a version, until
// every subscribed client of a held db is subscribed on the hold's target
// too. The wait is bounded well within the lease: a client not prepared
// by then is told to resubscribe, so the acknowledgement never hides a
// loss.
func (p *Proxy) waitSubs(ctx context.Context) {
	bound := min(p.cfg.DialTimeout+2*p.cfg.BackendTimeout, (p.cfg.LeaseTTL-p.cfg.LeaseMargin)/2)
	deadline := time.Now().Add(bound)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		p.subs.mu.Lock()
		n := len(p.subs.pending)
		if n > 0 && time.Now().After(deadline) {
			for ps := range p.subs.pending {
				p.log.Warn().Str("db", ps.key.String()).Msg("subscriber not prepared for the resize in time; told to resubscribe")
				go ps.moved("move", ErrSubMoved)
				delete(p.subs.pending, ps)
			}
			n = 0
		}
		p.subs.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

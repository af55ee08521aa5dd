package proxy

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/granary-db/granary/metadb"
)

// Hot keys. Each connection counts its forwarded commands that name a key
// and samples one in HotKeySample of them on average (a per-connection countdown: no
// shared state, no lock and no allocation for the others; the gaps are
// random, see hotSampler). A sampled
// command's first key goes into its db's space-saving summary (topk.go),
// behind that db's own mutex. Every HotKeyInterval the proxy publishes each
// db's top keys into metadb with their estimated rates, then decays the
// counts, so a report reflects about the last HotKeyWindow. A db that went
// quiet drops its summary; at most HotKeyDBs dbs have one at a time (the
// others' samples are dropped until a summary frees up). Key names are the
// tenant's data: they go to metadb only, never into logs or metrics.

// Hot-key summary sizes: counters kept per db, and keys reported per db.
const (
	hotCounters = 128
	hotReported = 32
)

// hotTracker is one db's summary.
type hotTracker struct {
	mu sync.Mutex
	tk *topK
}

// sampleKey is the slow path of hot-key sampling, for one sampled command:
// it counts the command's first key in its db's summary.
func (c *client) sampleKey(spec *cmdSpec, cmd *command) {
	if spec.firstKey <= 0 || spec.firstKey >= len(cmd.args) {
		return
	}
	db, err := c.route()
	if err != nil {
		return
	}
	h := c.p.hotOf(db.st)
	if h == nil {
		return
	}
	h.mu.Lock()
	h.tk.offer(cmd.args[spec.firstKey], 1)
	h.mu.Unlock()
}

// hotOf is the db's summary, made on first use; nil when HotKeyDBs dbs
// already have one.
func (p *Proxy) hotOf(st *dbState) *hotTracker {
	if h := st.hot.Load(); h != nil {
		return h
	}
	if p.hotDBs.Load() >= int64(p.cfg.HotKeyDBs) {
		p.metrics.hotDropped.Inc()
		return nil
	}
	h := &hotTracker{tk: newTopK(hotCounters)}
	if !st.hot.CompareAndSwap(nil, h) {
		return st.hot.Load()
	}
	p.hotDBs.Add(1)
	return h
}

// hotLoop publishes the hot keys every HotKeyInterval until ctx ends.
func (p *Proxy) hotLoop(ctx context.Context) error {
	if p.cfg.HotKeySample == 0 {
		return nil
	}
	t := time.NewTicker(p.cfg.HotKeyInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hs := p.hotReport(time.Now().UTC())
		cctx, cancel := context.WithTimeout(ctx, p.cfg.HotKeyInterval)
		err := p.store.PublishHotKeys(cctx, p.cfg.ID, hs, 3*p.cfg.HotKeyInterval+p.cfg.HotKeyWindow)
		cancel()
		if err != nil && ctx.Err() == nil {
			p.log.Debug().Err(err).Msg("hot keys not published")
		}
	}
}

// hotReport reads every routed db's summary into a report and decays it by
// one interval; a summary decayed to almost nothing, or of a db no longer
// routed, is dropped.
//
// The counts are exponentially decayed sampled counts: just before a decay
// by f = exp(-interval/window), a key sampled at a steady r per second has
// count r·interval/(1-f), so its rate is count·(1-f)/interval times the
// sampling ratio.
func (p *Proxy) hotReport(at time.Time) []metadb.HotKeys {
	iv := p.cfg.HotKeyInterval
	f := math.Exp(-float64(iv) / float64(p.cfg.HotKeyWindow))
	perCount := (1 - f) / iv.Seconds() * float64(p.cfg.HotKeySample)
	p.statesMu.Lock()
	sts := make([]*dbState, 0, len(p.states))
	for _, st := range p.states {
		if st.hot.Load() != nil {
			sts = append(sts, st)
		}
	}
	p.statesMu.Unlock()
	routes := p.snap.Load().dbs
	var out []metadb.HotKeys
	for _, st := range sts {
		h := st.hot.Load()
		if routes[st.key] == nil {
			// Dropped or moved away from this proxy: its keys are not
			// republished (a dropped db's record was deleted with it).
			if st.hot.CompareAndSwap(h, nil) {
				p.hotDBs.Add(-1)
			}
			continue
		}
		h.mu.Lock()
		top := h.tk.top(hotReported)
		sampled := h.tk.total
		h.tk.scale(f)
		idle := h.tk.total < 0.5
		h.mu.Unlock()
		if idle && st.hot.CompareAndSwap(h, nil) {
			// Samples that raced in after the read are lost with it.
			p.hotDBs.Add(-1)
		}
		if len(top) == 0 {
			continue
		}
		r := metadb.HotKeys{Tenant: st.key.tenant, Index: int(st.key.index), Time: at, SampleEvery: p.cfg.HotKeySample,
			Window: p.cfg.HotKeyWindow, Sampled: sampled, Keys: make([]metadb.HotKey, len(top))}
		for i, c := range top {
			r.Keys[i] = metadb.HotKey{Key: c.key, Rate: c.count * perCount, RateError: c.err * perCount}
		}
		out = append(out, r)
	}
	return out
}

// hotSampler is a connection's sampling state: a countdown to the next
// sampled command, redrawn after each sample uniformly from 1 to
// 2·HotKeySample-1 (mean HotKeySample) with the connection's own
// xorshift generator. A fixed stride would alias with a client's periodic
// pattern (a pipeline that always sends the same key at the same place);
// the random gap does not, and it costs the same on the fast path: one
// decrement and a compare.
type hotSampler struct {
	left  uint32
	every uint32
	rng   uint64
}

func newHotSampler(id uint64, every int) hotSampler {
	if every <= 0 {
		return hotSampler{left: math.MaxUint32}
	}
	s := hotSampler{every: uint32(every), rng: id*0x9e3779b97f4a7c15 | 1}
	s.left = s.gap()
	return s
}

// tick counts one keyed command and says whether to sample it.
func (s *hotSampler) tick() bool {
	s.left--
	if s.left != 0 {
		return false
	}
	s.left = s.gap()
	return s.every != 0
}

func (s *hotSampler) gap() uint32 {
	if s.every == 0 {
		return math.MaxUint32
	}
	s.rng ^= s.rng << 13
	s.rng ^= s.rng >> 7
	s.rng ^= s.rng << 17
	return 1 + uint32(s.rng%uint64(2*s.every-1))
}

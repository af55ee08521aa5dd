package tenantapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// A db's key report (metadb/keyreport.go):
//
//	POST /v1/dbs/{index}/keys/report   202 keysView: asks for a new big-key scan (or returns the one running, or one finished within KeyReportGap)
//	GET  /v1/dbs/{index}/keys/report   200 keysView: the latest big-key report and the proxies' hot keys
//	GET  /v1/admin/tenants/{tenant}/dbs/{index}/keys/report  the same, for the admin
//
// Key names are the tenant's data: only the tenant and the admin see them,
// and nothing here logs them.

// keysStore is what the key report calls need of metadb.
type keysStore interface {
	RequestKeyReport(ctx context.Context, tenant string, index int, minGap, stale time.Duration) (*metadb.KeyReport, bool, error)
	KeyReport(ctx context.Context, tenant string, index int) (*metadb.KeyReport, error)
	HotKeysOf(ctx context.Context, tenant string, index int, maxAge time.Duration) ([]metadb.HotKeys, error)
	Publish(ctx context.Context, sender string, env *buspb.Envelope) error
}

// hotKeysMaxAge: proxy reports older than this are left out of the merge
// (a proxy reports every 5 s by default; one that stopped is forgotten).
const hotKeysMaxAge = 30 * time.Second

// hotKeysShown is how many merged hot keys are shown.
const hotKeysShown = 32

type bigKeyView struct {
	Key      string `json:"key"`
	Type     string `json:"type"`
	Bytes    int64  `json:"bytes"`
	Elements int64  `json:"elements"`
}

type bigKeysView struct {
	Started    time.Time    `json:"started"`
	Finished   time.Time    `json:"finished"`
	ElapsedMS  int64        `json:"elapsed_ms"`
	Complete   bool         `json:"complete"`
	Partial    string       `json:"partial"`
	Keys       int64        `json:"keys"`
	Scanned    int64        `json:"scanned"`
	Slot       slotView     `json:"slot"`
	ByBytes    []bigKeyView `json:"by_bytes"`
	ByElements []bigKeyView `json:"by_elements"`
}

type hotKeyView struct {
	Key       string  `json:"key"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Error     float64 `json:"error"`
}

type hotKeysView struct {
	Time          *time.Time   `json:"time"`
	Proxies       int          `json:"proxies"`
	SampleEvery   int          `json:"sample_every"`
	WindowSeconds float64      `json:"window_seconds"`
	Keys          []hotKeyView `json:"keys"`
}

// keysView is a db's key report: the state of its latest big-key scan,
// the latest finished one (null before the first), and the hot keys.
type keysView struct {
	Index     int          `json:"index"`
	State     string       `json:"state"` // none, pending, running, done, failed
	Requested *time.Time   `json:"requested"`
	Scanned   int64        `json:"scanned"`
	Error     string       `json:"error"`
	Big       *bigKeysView `json:"big_keys"`
	Hot       hotKeysView  `json:"hot_keys"`
}

func (s *Server) postKeyReport(w http.ResponseWriter, r *http.Request) {
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if db.State != metadb.DBActive && db.State != metadb.DBResizing {
		s.writeError(w, r, errorf(metadb.ErrBadState, "db %d is %s: a key report needs a serving db", db.Index, db.State))
		return
	}
	rep, started, err := s.store.RequestKeyReport(r.Context(), db.Tenant, db.Index, s.cfg.KeyReportGap, metadb.KeyReportStale)
	if errors.Is(err, metadb.ErrNotFound) {
		err = errorf(metadb.ErrNotFound, "no db %d", db.Index)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if started {
		// Only a nudge: the keeper also polls the pending set.
		env := &buspb.Envelope{Payload: &buspb.Envelope_KeeperCommand{KeeperCommand: &buspb.KeeperCommand{
			Kind: metadb.KeyReportCommand, Pair: db.Pair, Db: uint32(db.SlotDB)}}}
		if err := s.store.Publish(r.Context(), s.sender, env); err != nil {
			s.log.Debug().Err(err).Msg("key report nudge not sent")
		}
	}
	v, err := s.keysOf(r.Context(), db.Tenant, db.Index, rep)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, v)
}

func (s *Server) getKeyReport(w http.ResponseWriter, r *http.Request) {
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerKeys(w, r, db.Tenant, db.Index)
}

func (s *Server) adminKeyReport(w http.ResponseWriter, r *http.Request) {
	name, err := pathTenant(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	index, err := parseIndex(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.store.DB(r.Context(), name, index); err != nil {
		if errors.Is(err, metadb.ErrNotFound) {
			err = errorf(metadb.ErrNotFound, "no db %d of tenant %s", index, name)
		}
		s.writeError(w, r, err)
		return
	}
	s.answerKeys(w, r, name, index)
}

func (s *Server) answerKeys(w http.ResponseWriter, r *http.Request, tenant string, index int) {
	rep, err := s.store.KeyReport(r.Context(), tenant, index)
	if err != nil && !errors.Is(err, metadb.ErrNotFound) {
		s.writeError(w, r, err)
		return
	}
	v, err := s.keysOf(r.Context(), tenant, index, rep)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// keysOf builds the view of a db's report (rep may be nil: never asked)
// and merges the proxies' hot keys.
func (s *Server) keysOf(ctx context.Context, tenant string, index int, rep *metadb.KeyReport) (keysView, error) {
	v := keysView{Index: index, State: "none", Hot: hotKeysView{Keys: []hotKeyView{}}}
	if rep != nil {
		req := rep.Requested
		v.State, v.Requested, v.Scanned, v.Error = rep.State, &req, rep.Scanned, rep.Error
		if l := rep.Last; l != nil {
			v.Big = &bigKeysView{Started: l.Started, Finished: l.Finished, ElapsedMS: l.Elapsed.Milliseconds(),
				Complete: l.Complete, Partial: l.Partial, Keys: l.Keys, Scanned: l.Scanned,
				Slot: slotView{Pair: l.Pair, DB: l.SlotDB}, ByBytes: bigKeyViews(l.ByBytes), ByElements: bigKeyViews(l.ByElements)}
		}
	}
	hs, err := s.store.HotKeysOf(ctx, tenant, index, hotKeysMaxAge)
	if err != nil {
		return v, err
	}
	v.Hot = mergeHotKeys(hs, hotKeysShown)
	return v, nil
}

func bigKeyViews(ks []metadb.BigKey) []bigKeyView {
	out := make([]bigKeyView, len(ks))
	for i, k := range ks {
		out[i] = bigKeyView{Key: k.Key, Type: k.Type, Bytes: k.Bytes, Elements: k.Elements}
	}
	return out
}

// mergeHotKeys sums the proxies' estimates per key (a tenant's commands
// on a db may go through several proxies) and keeps the n highest. A key
// missing from a proxy's report counts 0 there: a key hot on one proxy
// only is still found, with that proxy's estimate.
func mergeHotKeys(hs []metadb.HotKeys, n int) hotKeysView {
	v := hotKeysView{Proxies: len(hs), Keys: []hotKeyView{}}
	sum := map[string]*hotKeyView{}
	for _, h := range hs {
		if v.Time == nil || h.Time.After(*v.Time) {
			t := h.Time
			v.Time = &t
		}
		v.SampleEvery = max(v.SampleEvery, h.SampleEvery)
		v.WindowSeconds = math.Max(v.WindowSeconds, h.Window.Seconds())
		for _, k := range h.Keys {
			e := sum[k.Key]
			if e == nil {
				e = &hotKeyView{Key: k.Key}
				sum[k.Key] = e
			}
			e.OpsPerSec += k.Rate
			e.Error += k.RateError
		}
	}
	for _, e := range sum {
		e.OpsPerSec, e.Error = round2(e.OpsPerSec), round2(e.Error)
		v.Keys = append(v.Keys, *e)
	}
	slices.SortFunc(v.Keys, func(a, b hotKeyView) int {
		switch {
		case a.OpsPerSec > b.OpsPerSec:
			return -1
		case a.OpsPerSec < b.OpsPerSec:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(v.Keys) > n {
		v.Keys = v.Keys[:n]
	}
	return v
}

func round2(x float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 2, 64), 64)
	return f
}

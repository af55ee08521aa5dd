package tenantapi

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// memberForget is how long a proxy or keeper whose lease lapsed stays in the
// admin listings (shown as not live) before it is left out.
const memberForget = time.Minute

// pairView is a pair as the admin views show it.
type pairView struct {
	ID      string `json:"id"`
	Size    string `json:"size"`
	Master  string `json:"master"`
	Replica string `json:"replica"`
	DBs     int    `json:"dbs"`
	Free    int    `json:"free"`
	Keeper  string `json:"keeper"`
	State   string `json:"state"`
	// Persistence is the pair's policy; absent for a pair added before
	// policies.
	Persistence string `json:"persistence,omitempty"`
	// Health is the watching keeper's last report; absent before the
	// first.
	Health *healthView `json:"health,omitempty"`
}

// healthView is a keeper's last report on a pair, as the admin sees it.
type healthView struct {
	At        time.Time `json:"at"`
	Keeper    string    `json:"keeper"`
	MasterUp  bool      `json:"master_up"`
	ReplicaUp bool      `json:"replica_up"`
	// ReplicaState is the replica's link as its master lists it
	// ("online"); empty when the master does not list it.
	ReplicaState string `json:"replica_state"`
	// LagSec is the seconds since the replica's last acknowledgement and
	// LagBytes the master's offset minus the replica's; -1 when unknown.
	LagSec   int64 `json:"lag_sec"`
	LagBytes int64 `json:"lag_bytes"`
}

func viewPair(p *metadb.Pair, free int) pairView {
	return pairView{ID: p.ID, Size: p.Size, Master: p.Master, Replica: p.Replica, DBs: len(p.DBs), Free: free, Keeper: p.Keeper, State: p.State, Persistence: p.Persistence}
}

func viewHealth(h *metadb.PairHealth) *healthView {
	return &healthView{At: h.At, Keeper: h.Keeper, MasterUp: h.Master.Up, ReplicaUp: h.Replica.Up,
		ReplicaState: h.ReplicaState, LagSec: h.LagSec, LagBytes: h.LagBytes}
}

// poolView is one size class with its pairs and totals.
type poolView struct {
	Size  string     `json:"size"`
	Pairs []pairView `json:"pairs"`
	Total int        `json:"total"`
	Free  int        `json:"free"`
}

// listPools shows every size class, smallest first, empty ones included.
func (s *Server) listPools(w http.ResponseWriter, r *http.Request) {
	out := make([]poolView, 0, len(pools.All))
	for _, size := range pools.All {
		views, err := s.store.Pairs(r.Context(), size.String())
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		p := poolView{Size: size.String(), Pairs: make([]pairView, 0, len(views))}
		for i := range views {
			pv := viewPair(&views[i].Pair, views[i].Free)
			h, err := s.store.PairHealth(r.Context(), pv.ID)
			switch {
			case err == nil:
				pv.Health = viewHealth(h)
			case !errors.Is(err, metadb.ErrNotFound):
				s.writeError(w, r, err)
				return
			}
			p.Pairs = append(p.Pairs, pv)
			p.Total += len(views[i].DBs)
			p.Free += views[i].Free
		}
		out = append(out, p)
	}
	writeJSON(w, http.StatusOK, out)
}

type addPairRequest struct {
	Master  string `json:"master"`
	Replica string `json:"replica"`
	DBs     string `json:"dbs"`
	// Persistence is the policy both servers must run under
	// (pools.Persistence); "" is none.
	Persistence string `json:"persistence"`
}

// addPair checks a candidate pair against the real servers and, when every
// check passes, puts its slots into the size's pool. A refused pair changes
// nothing: 409 when an address is already registered, 422 naming the first
// failing check otherwise.
func (s *Server) addPair(w http.ResponseWriter, r *http.Request) {
	auditTarget(r, "pool "+clip(chi.URLParam(r, "size")))
	size, err := pools.ParseSize(chi.URLParam(r, "size"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req addPairRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	master, err := parseAddr("master", req.Master)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	replica, err := parseAddr("replica", req.Replica)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	dbs, err := pools.ParseDBs(req.DBs)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	persistence, err := pools.ParsePersistence(req.Persistence)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mv, rv, errM, errR := s.probeBoth(r.Context(), master, replica)
	for _, v := range []pools.ServerView{mv, rv} {
		if v.RegisteredAs != "" {
			s.writeError(w, r, errorf(metadb.ErrExists, "%s is already registered (%s)", v.Addr, v.RegisteredAs))
			return
		}
	}
	if err := errors.Join(errM, errR); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := pools.CheckPair(size, dbs, mv, rv); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := pools.CheckPersistence(persistence, mv, rv); err != nil {
		s.writeError(w, r, err)
		return
	}
	pair, err := s.store.AddPair(r.Context(), size.String(), master, replica, dbs, metadb.WithPersistence(string(persistence)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	auditTarget(r, pair.ID)
	s.log.Info().Str("pair", pair.ID).Str("size", size.String()).Str("master", master).Str("replica", replica).
		Int("dbs", len(dbs)).Msg("pair added")
	writeJSON(w, http.StatusCreated, viewPair(pair, len(dbs)))
}

type spareView struct {
	Addr string `json:"addr"`
}

// addSpare checks a server for the spare pool: it must answer, be a master
// (not replicating from anyone) and hold no keys.
func (s *Server) addSpare(w http.ResponseWriter, r *http.Request) {
	var req spareView
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	addr, err := parseAddr("spare", req.Addr)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	auditTarget(r, addr) // only once parsed: the raw text may hold a password
	v, err := s.probe(r.Context(), addr)
	if err == nil {
		err = checkSpare(v)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.AddSpare(r.Context(), addr); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("addr", addr).Msg("spare added")
	writeJSON(w, http.StatusCreated, spareView{Addr: addr})
}

// checkSpare decides whether an observed server may join the spare pool.
func checkSpare(v pools.ServerView) error {
	fail := func(format string, a ...any) error {
		return errorf(pools.ErrPairCheck, "spare check failed: %s", fmt.Sprintf(format, a...))
	}
	switch {
	case v.RegisteredAs != "":
		return errorf(metadb.ErrExists, "%s is already registered (%s)", v.Addr, v.RegisteredAs)
	case !v.Reachable:
		return fail("%s does not answer: %s", v.Addr, v.Err)
	case v.Role != "master":
		return fail("%s is not a master (role %s): a spare must not replicate from anyone", v.Addr, v.Role)
	case len(v.NonEmptyDBs) > 0:
		return fail("db %d on %s is not empty: a spare must hold no keys", v.NonEmptyDBs[0], v.Addr)
	}
	return nil
}

func (s *Server) listSpares(w http.ResponseWriter, r *http.Request) {
	spares, err := s.store.Spares(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]spareView, len(spares))
	for i, a := range spares {
		out[i] = spareView{Addr: a}
	}
	writeJSON(w, http.StatusOK, out)
}

// listMembers shows the registered proxies or keepers, live or lately lapsed.
func (s *Server) listMembers(kind metadb.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ms, err := s.store.Members(r.Context(), kind, memberForget)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if ms == nil {
			ms = []*metadb.Member{}
		}
		writeJSON(w, http.StatusOK, ms)
	}
}

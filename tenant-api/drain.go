package tenantapi

import (
	"errors"
	"net/http"
	"regexp"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

var pairID = regexp.MustCompile(`^p[0-9]{1,18}$`)

// drainPair starts the drain job of a pair (the master moves every db off
// it with same-size resizes, then marks it drained): 202 with the job, or
// 200 with the job already draining it. An unknown pair is 404; the last
// active pair of its pool, or one whose dbs the pool's other active pairs
// have no room for, is 409 and nothing changes.
func (s *Server) drainPair(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	auditTarget(r, "pair "+clip(id))
	if !pairID.MatchString(id) {
		s.writeError(w, r, errorf(metadb.ErrNotFound, "no pair %q", clip(id)))
		return
	}
	job, existing, err := s.store.StartDrain(r.Context(), id, newJobID())
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no pair %q", id)
	case err != nil && !errors.Is(err, metadb.ErrNotLeader):
		err = errorf(err, "cannot drain pair %s: %v", id, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusAccepted
	if existing {
		status = http.StatusOK
	} else {
		s.log.Info().Str("pair", id).Str("job", job.ID).Msg("pair drain started")
	}
	writeJSON(w, status, jobRef{Job: job.ID})
}

// rebalancePool starts the rebalance job of a pool (the master plans the
// fewest moves that even its pairs' used bytes and makes them one at a
// time): 202 with the job, or 200 with the one still running. A pool of
// fewer than two active pairs is 409 and nothing changes.
func (s *Server) rebalancePool(w http.ResponseWriter, r *http.Request) {
	auditTarget(r, "pool "+clip(chi.URLParam(r, "size")))
	size, err := pools.ParseSize(chi.URLParam(r, "size"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, existing, err := s.store.StartRebalance(r.Context(), size.String(), newJobID())
	if err != nil && errors.Is(err, metadb.ErrBadState) {
		err = errorf(err, "cannot rebalance pool %s: %v", size, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusAccepted
	if existing {
		status = http.StatusOK
	} else {
		s.log.Info().Str("pool", size.String()).Str("job", job.ID).Msg("pool rebalance started")
	}
	writeJSON(w, status, jobRef{Job: job.ID})
}

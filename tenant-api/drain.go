package tenantapi

import (
	"errors"
	"net/http"
	"regexp"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
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

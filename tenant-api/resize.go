package tenantapi

import (
	"errors"
	"net/http"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// checkResize refuses, before anything moves, a resize that cannot start:
// a db that is not active, the size it already has, or a shrink whose
// measured data does not fit the smaller size.
func checkResize(db *metadb.DB, size pools.Size) error {
	switch {
	case db.State != metadb.DBActive:
		return errorf(metadb.ErrBadState, "db %d is %s: wait for its job to finish before resizing", db.Index, db.State)
	case db.Size == size.String():
		return errorf(metadb.ErrBadState, "db %d is already %s", db.Index, size)
	case db.UsedBytes > size.Bytes():
		return errorf(metadb.ErrNoFit, "db %d holds %d bytes, more than %s: delete data first or choose a bigger size", db.Index, db.UsedBytes, size)
	}
	return nil
}

// startResize records the resize job of a db (the master reserves the new
// slot and drives it): 202 with the job to follow.
func (s *Server) startResize(w http.ResponseWriter, r *http.Request, index int, size pools.Size) {
	ctx := r.Context()
	views, err := s.store.Pairs(ctx, size.String())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	free := 0
	for _, v := range views {
		if v.State == metadb.PairActive {
			free += v.Free
		}
	}
	if free == 0 {
		s.writeError(w, r, errorf(pools.ErrNoCapacity, "no free %s db to resize into: the pool is full; try another size or ask the operator to add capacity", size))
		return
	}
	job, err := s.store.StartResize(ctx, tenantOf(r), index, size.String(), size.Bytes(), newJobID())
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no db %d", index)
	case errors.Is(err, metadb.ErrBadState), errors.Is(err, metadb.ErrNoFit):
		err = errorf(err, "cannot resize db %d: %v", index, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", tenantOf(r)).Int("index", index).Str("size", size.String()).Str("job", job.ID).Msg("db resize started")
	writeJSON(w, http.StatusAccepted, jobRef{Job: job.ID})
}

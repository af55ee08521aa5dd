package tenantapi

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
)

// dbView is a tenant db as the API shows it.
type dbView struct {
	Index      int    `json:"index"`
	Size       string `json:"size"`
	State      string `json:"state"`
	WriteMode  string `json:"write_mode"`
	UsedBytes  int64  `json:"used_bytes"`
	QuotaBytes int64  `json:"quota_bytes"`
	Banned     bool   `json:"banned"`
	// ReadOnly is set while a job replaces the db's content (restore,
	// import): what it is doing; proxies refuse the db's writes meanwhile.
	ReadOnly string `json:"read_only,omitempty"`
	// WriteDegraded is set while the db's pair has had no replica for a
	// while after a failover: confirmed writes are acknowledged without
	// one, as async writes are, until a replica is attached.
	WriteDegraded bool `json:"write_degraded,omitempty"`
	// Warning is set once the db uses 80 % of its quota or more, or while
	// its writes are degraded.
	Warning  string   `json:"warning,omitempty"`
	Endpoint string   `json:"endpoint"`
	URL      string   `json:"url"`
	Slot     slotView `json:"slot"`
	Job      string   `json:"job,omitempty"`
	Created  string   `json:"created"`
}

type slotView struct {
	Pair string `json:"pair"`
	DB   int    `json:"db"`
}

// viewDB shows db. The URL carries the user but not the password: metadb
// keeps only the password's hash, and the tenant got it at signup. Until the
// master has assigned a proxy, endpoint and url are empty.
func viewDB(db *metadb.DB) dbView {
	v := dbView{
		Index: db.Index, Size: db.Size, State: db.State, WriteMode: db.WriteMode,
		UsedBytes: db.UsedBytes, QuotaBytes: db.QuotaBytes, Banned: db.Banned, ReadOnly: db.ReadOnly,
		Endpoint: db.ProxyAddr, Slot: slotView{Pair: db.Pair, DB: db.SlotDB},
		Job: db.Job, Created: db.Created,
	}
	switch {
	case db.Banned:
		v.Warning = "over quota: writes that grow the db are refused; delete keys or resize to a bigger size"
	case db.QuotaBytes > 0 && db.UsedBytes*5 >= db.QuotaBytes*4:
		v.Warning = fmt.Sprintf("db uses %d%% of its quota", db.UsedBytes*100/db.QuotaBytes)
	}
	if db.ProxyAddr != "" {
		v.URL = "redis://" + db.Tenant + "@" + db.ProxyAddr + "/" + strconv.Itoa(db.Index)
	}
	return v
}

type createRequest struct {
	Size      string `json:"size"`
	WriteMode string `json:"write_mode"`
}

// createDB claims a slot for a new db, then waits up to CreateWait for the
// master to finish the create job. It answers 201 either way: with the
// finished db, or with state "creating" and the job to follow.
func (s *Server) createDB(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	size, err := pools.ParseSize(req.Size)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mode, err := parseWriteMode(req.WriteMode, metadb.WriteConfirmed)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tenant := tenantOf(r)
	auditTarget(r, tenant)
	db, job, err := s.claim(r.Context(), tenant, size, mode)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	auditTarget(r, tenant+"/"+strconv.Itoa(db.Index))
	s.log.Info().Str("tenant", tenant).Int("index", db.Index).Str("pair", db.Pair).Int("slot", db.SlotDB).
		Str("job", job.ID).Msg("db claimed")
	job, err = s.waitJob(r.Context(), job.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if job.State == metadb.JobFailed {
		s.writeError(w, r, errorf(errCreateFailed, "creating db %d failed: %s; see GET /v1/jobs/%s", db.Index, job.Error, job.ID))
		return
	}
	if job.State == metadb.JobDone {
		if db, err = s.store.DB(r.Context(), tenant, db.Index); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	v := viewDB(db)
	if job.State == metadb.JobRunning {
		v.Job = job.ID
	}
	writeJSON(w, http.StatusCreated, v)
}

// parseWriteMode checks a write mode; an empty one is def, or refused when
// def is empty too.
func parseWriteMode(s, def string) (string, error) {
	switch s {
	case metadb.WriteConfirmed, metadb.WriteAsync:
		return s, nil
	case "":
		if def != "" {
			return def, nil
		}
	}
	return "", errorf(errBadRequest, "bad write_mode %q: use %q or %q", clip(s), metadb.WriteConfirmed, metadb.WriteAsync)
}

// dbIndex is a tenant db index in a URL: a non-negative decimal that fits
// easily in an int.
var dbIndex = regexp.MustCompile(`^[0-9]{1,9}$`)

func parseIndex(r *http.Request) (int, error) {
	s := chi.URLParam(r, "index")
	if !dbIndex.MatchString(s) {
		return 0, errorf(errBadRequest, "bad db index %q: use a non-negative integer", clip(s))
	}
	n, _ := strconv.Atoi(s)
	return n, nil
}

// loadDB loads one of the caller's dbs; another tenant's index is simply
// not found, so nothing tells a tenant what others own.
func (s *Server) loadDB(r *http.Request) (*metadb.DB, error) {
	index, err := parseIndex(r)
	if err != nil {
		return nil, err
	}
	db, err := s.store.DB(r.Context(), tenantOf(r), index)
	if errors.Is(err, metadb.ErrNotFound) {
		return nil, errorf(metadb.ErrNotFound, "no db %d", index)
	}
	return db, err
}

func (s *Server) listDBs(w http.ResponseWriter, r *http.Request) {
	dbs, err := s.store.DBs(r.Context(), tenantOf(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]dbView, len(dbs))
	for i, db := range dbs {
		out[i] = viewDB(db)
	}
	s.markDegraded(r, out)
	writeJSON(w, http.StatusOK, out)
}

// degradedWarning is the view's warning while a db's writes are degraded.
const degradedWarning = "writes degraded: the db's servers lost their replica in a failover and no spare is attached yet; " +
	"writes are acknowledged before a replica has them, until one is"

// markDegraded sets write_degraded on the views of confirmed dbs whose
// pair's writes are degraded (metadb/degraded.go). Without the pairs
// (metadb failing) the views are left as they are.
func (s *Server) markDegraded(r *http.Request, views []dbView) {
	pairs, err := s.store.Pairs(r.Context(), "")
	if err != nil {
		s.log.Warn().Err(err).Msg("pairs for the degraded-writes mark")
		return
	}
	degraded := map[string]bool{}
	for _, p := range pairs {
		degraded[p.ID] = p.WritesDegraded
	}
	for i := range views {
		v := &views[i]
		if degraded[v.Slot.Pair] && v.WriteMode == metadb.WriteConfirmed {
			v.WriteDegraded = true
			if v.Warning == "" {
				v.Warning = degradedWarning
			}
		}
	}
}

func (s *Server) getDB(w http.ResponseWriter, r *http.Request) {
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := []dbView{viewDB(db)}
	s.markDegraded(r, v)
	writeJSON(w, http.StatusOK, v[0])
}

type patchRequest struct {
	Size      *string `json:"size"`
	WriteMode *string `json:"write_mode"`
}

// patchDB changes a db's write mode (the proxies learn it through a
// RouteChanged on the bus) or, later, its size.
func (s *Server) patchDB(w http.ResponseWriter, r *http.Request) {
	index, err := parseIndex(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req patchRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	switch {
	case req.Size != nil: // a db.mode change made on the way is recorded on its own
		auditAction(r, metadb.AuditDBResize)
	case req.WriteMode != nil:
		auditAction(r, metadb.AuditDBMode)
	}
	if req.Size == nil && req.WriteMode == nil {
		s.writeError(w, r, errorf(errBadRequest, `empty patch: give "size" or "write_mode"`))
		return
	}
	if req.Size != nil {
		if _, err := pools.ParseSize(*req.Size); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	var mode string
	if req.WriteMode != nil {
		if mode, err = parseWriteMode(*req.WriteMode, ""); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Size != nil {
		size, _ := pools.ParseSize(*req.Size)
		if err := checkResize(db, size); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if req.WriteMode != nil && db.WriteMode != mode {
		if db, err = s.setWriteMode(r, index, mode); err != nil {
			s.writeError(w, r, err)
			return
		}
		s.log.Info().Str("tenant", db.Tenant).Int("index", index).Str("write_mode", mode).Msg("write mode changed")
		if req.Size != nil {
			s.audit(r, metadb.AuditEntry{Actor: "tenant:" + db.Tenant, Action: metadb.AuditDBMode,
				Target: db.Tenant + "/" + strconv.Itoa(index), Tenant: db.Tenant, Result: metadb.AuditOK})
		}
	}
	if req.Size != nil {
		size, _ := pools.ParseSize(*req.Size)
		s.startResize(w, r, index, size)
		return
	}
	writeJSON(w, http.StatusOK, viewDB(db))
}

// setWriteMode stores the new mode and, for a db that proxies serve, bumps
// the topology version with the db's new route in the same transaction.
func (s *Server) setWriteMode(r *http.Request, index int, mode string) (*metadb.DB, error) {
	ctx := r.Context()
	return s.store.UpdateDB(ctx, nil, s.sender, tenantOf(r), index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		if db.State == metadb.DBDropping {
			return nil, errorf(metadb.ErrBadState, "db %d is being dropped", index)
		}
		db.WriteMode = mode
		if db.State != metadb.DBActive && db.State != metadb.DBResizing {
			return nil, nil // not routed yet: the master publishes the route, mode included
		}
		pair, err := s.store.Pair(ctx, db.Pair)
		if err != nil {
			return nil, err
		}
		return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{
			RouteChanged: &buspb.RouteChanged{Route: metadb.RouteOf(db, pair)}}}}, nil
	})
}

type jobRef struct {
	Job string `json:"job"`
}

// dropDB starts the drop job of an active db: 202 with the job to follow.
func (s *Server) dropDB(w http.ResponseWriter, r *http.Request) {
	index, err := parseIndex(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, err := s.store.StartDrop(r.Context(), tenantOf(r), index, newJobID())
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no db %d", index)
	case errors.Is(err, metadb.ErrBadState):
		err = errorf(metadb.ErrBadState, "db %d cannot be dropped now (%v): wait for its job to finish", index, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", tenantOf(r)).Int("index", index).Str("job", job.ID).Msg("db drop started")
	writeJSON(w, http.StatusAccepted, jobRef{Job: job.ID})
}

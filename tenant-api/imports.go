package tenantapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/internal/importsrc"
	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/metadb"
)

// An import copies a live outside Redis db into one of the tenant's dbs,
// which refuses writes meanwhile, then cuts over when the tenant asks (see
// master/import.go and keeper/import.go). The POST checks the source for
// real before recording anything; the source's password stays in the job
// for the keeper until the job ends, and no answer, log line or audit
// entry ever holds it: sources are shown as redis://host:port.

type importRequest struct {
	Source string `json:"source"`
	DB     *int   `json:"db"`
}

// importView is an import job as its POST, cutover and DELETE answer it.
type importView struct {
	Job string `json:"job"`
	jobView
}

// importGuard is the guard a source is dialled through: the operator's
// allow-list, and every server of the cluster denied (metadb, pair
// servers, spares, the proxies seen in the last day).
func (s *Server) importGuard(ctx context.Context) (*netguard.Guard, error) {
	pairs, err := s.store.Pairs(ctx, "")
	if err != nil {
		return nil, err
	}
	spares, err := s.store.Spares(ctx)
	if err != nil {
		return nil, err
	}
	proxies, err := s.store.Members(ctx, metadb.KindProxy, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	deny := append(s.store.MetadbAddrs(ctx), spares...)
	for _, p := range pairs {
		deny = append(deny, p.Master, p.Replica)
	}
	for _, m := range proxies {
		deny = append(deny, m.Addr)
	}
	return importsrc.NewGuard(importsrc.SplitAllow(s.cfg.ImportAllow), deny)
}

// startImport checks the request, the target db and the source, then
// records the job: 202 with it. Every refusal changes nothing.
func (s *Server) startImport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req importRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	db := 0
	if req.DB != nil {
		db = *req.DB
	}
	src, err := importsrc.Parse(req.Source, db)
	if err != nil {
		s.writeError(w, r, errorf(errBadRequest, "%v", err))
		return
	}
	target, err := s.fillableDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	g, err := s.importGuard(ctx)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c := src.Client(g, 1)
	defer c.Close()
	size, err := importsrc.Check(ctx, c, target.QuotaBytes)
	if err != nil {
		if ctx.Err() != nil {
			s.writeError(w, r, ctx.Err())
			return
		}
		s.writeError(w, r, errorf(errSourceCheck, "%s: %v", src.Redacted(), err))
		return
	}
	data := map[string]string{
		metadb.ImportSource:   src.Redacted(),
		metadb.ImportSourceDB: strconv.Itoa(src.DB),
	}
	if src.User != "" {
		data[metadb.ImportUser] = src.User
	}
	if src.Password != "" {
		data[metadb.ImportPassword] = src.Password
	}
	job, err := s.store.StartImport(ctx, tenantOf(r), target.Index, newJobID(), data)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no db %d", target.Index)
	case errors.Is(err, metadb.ErrBadState):
		err = errorf(err, "cannot import into db %d: %v", target.Index, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", tenantOf(r)).Int("index", target.Index).Str("source", src.Redacted()).
		Int64("source_bytes", size).Str("job", job.ID).Msg("db import started")
	writeJSON(w, http.StatusAccepted, importView{Job: job.ID, jobView: viewJob(job)})
}

// importCall runs a cutover or cancel request on the import named in the
// path and answers the job.
func (s *Server) importCall(w http.ResponseWriter, r *http.Request, status int,
	call func(ctx context.Context, tenant string, index int, id string) (*metadb.Job, error)) {
	index, err := parseIndex(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := chi.URLParam(r, "id")
	if !jobID.MatchString(id) {
		s.writeError(w, r, errorf(metadb.ErrNotFound, "no import %q", clip(id)))
		return
	}
	job, err := call(r.Context(), tenantOf(r), index, id)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no import %q of db %d", id, index)
	case errors.Is(err, metadb.ErrBadState):
		err = errorf(err, "%v", err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, status, importView{Job: job.ID, jobView: viewJob(job)})
}

// cutoverImport asks the keeper to cut the import over as soon as it is in
// step: 202; follow the job until it is done.
func (s *Server) cutoverImport(w http.ResponseWriter, r *http.Request) {
	s.importCall(w, r, http.StatusAccepted, s.store.RequestImportCutover)
}

// cancelImport stops the import: the db takes writes again and keeps the
// keys copied so far. 202; the job ends failed, "cancelled".
func (s *Server) cancelImport(w http.ResponseWriter, r *http.Request) {
	s.importCall(w, r, http.StatusAccepted, s.store.CancelImport)
}

// importFields are an import job's progress, for its view.
type importFields struct {
	Source           string   `json:"source"`
	SourceDB         int      `json:"source_db"`
	KeysCopied       int64    `json:"keys_copied"`
	KeysTotal        int64    `json:"keys_total"`
	DirtyKeys        int64    `json:"dirty_keys"`
	LagSeconds       *float64 `json:"lag_seconds,omitempty"`
	InStep           bool     `json:"in_step"`
	CutoverRequested bool     `json:"cutover_requested"`
	Cancelled        bool     `json:"cancelled"`
}

// viewImport is j's import progress. The source is the redacted one the
// job keeps; the password is never read here.
func viewImport(j *metadb.Job) *importFields {
	v := &importFields{Source: j.Data[metadb.ImportSource], InStep: j.Data[metadb.ImportInStep] == "true",
		CutoverRequested: j.Data[metadb.ImportCutoverAt] != "", Cancelled: j.Data[metadb.ImportCancelAt] != ""}
	v.SourceDB, _ = strconv.Atoi(j.Data[metadb.ImportSourceDB])
	v.KeysCopied, _ = strconv.ParseInt(j.Data[metadb.ResizeKeysCopied], 10, 64)
	v.KeysTotal, _ = strconv.ParseInt(j.Data[metadb.ResizeKeysTotal], 10, 64)
	v.DirtyKeys, _ = strconv.ParseInt(j.Data[metadb.ImportDirty], 10, 64)
	if ms, err := strconv.ParseInt(j.Data[metadb.ImportLastApply], 10, 64); err == nil && j.State == metadb.JobRunning {
		lag := max(0, time.Since(time.UnixMilli(ms)).Seconds())
		v.LagSeconds = &lag
	}
	return v
}

// fillableDB loads the request's db for a job that replaces its content (an
// import, a restore): it must be active and not read-only already, checked
// before anything is read or dialled (metadb checks again when it records
// the job).
func (s *Server) fillableDB(r *http.Request) (*metadb.DB, error) {
	db, err := s.loadDB(r)
	switch {
	case err != nil:
		return nil, err
	case db.State != metadb.DBActive:
		return nil, errorf(metadb.ErrBadState, "db %d is %s: wait for its job to end first", db.Index, db.State)
	case db.ReadOnly != "":
		return nil, errorf(metadb.ErrBadState, "db %d is read-only while %s: wait for that job to end (or cancel it) first", db.Index, db.ReadOnly)
	}
	return db, nil
}

package tenantapi

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/metadb"
)

// An export writes one of the tenant's dbs as an RDB file that a plain
// redis-server loads (see metadb/exports.go and keeper/export.go). The
// export's id is its job's; the file is kept in the object store until the
// tenant deletes it, even after the db is dropped, and at most
// MaxExportsPerTenant exports are kept per tenant.

// exportFields is an export job's own part of the job view.
type exportFields struct {
	KeysCopied int64  `json:"keys_copied"`
	KeysTotal  int64  `json:"keys_total"`
	Size       int64  `json:"size,omitempty"`   // the finished file's bytes
	SHA256     string `json:"sha256,omitempty"` // the finished file's SHA-256, hex
	Download   string `json:"download"`         // where the file is served once done
}

func viewExportFields(j *metadb.Job) *exportFields {
	v := &exportFields{SHA256: j.Data[metadb.ExportSHA256], Download: "/v1/exports/" + j.ID}
	v.KeysCopied, _ = strconv.ParseInt(j.Data[metadb.ResizeKeysCopied], 10, 64)
	v.KeysTotal, _ = strconv.ParseInt(j.Data[metadb.ResizeKeysTotal], 10, 64)
	v.Size, _ = strconv.ParseInt(j.Data[metadb.ExportSize], 10, 64)
	return v
}

// exportJobView is an export job as its POST answers it.
type exportJobView struct {
	Job string `json:"job"`
	jobView
}

// exportView is one export as GET /v1/exports lists it and DELETE
// answers it.
type exportView struct {
	ID       string  `json:"id"`
	Index    int     `json:"index"`
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	Created  string  `json:"created"`
	Updated  string  `json:"updated"`
	Bytes    int64   `json:"bytes"` // the file's size once done; written so far while running
	Keys     int64   `json:"keys"`
	SHA256   string  `json:"sha256,omitempty"`
	Error    string  `json:"error,omitempty"`
	Download string  `json:"download"`
}

func viewExport(j *metadb.Job) exportView {
	f := viewExportFields(j)
	v := exportView{ID: j.ID, Index: j.Index, State: j.State, Progress: j.Progress, Created: j.Created,
		Updated: j.Updated, Keys: f.KeysCopied, SHA256: f.SHA256, Error: j.Error, Download: f.Download}
	v.Bytes, _ = strconv.ParseInt(j.Data[metadb.ResizeBytesCopied], 10, 64)
	if f.Size > 0 {
		v.Bytes = f.Size
	}
	return v
}

// objects is the store exports are kept in, or 503 when this server has
// none.
func (s *Server) objects() (objstore.Store, error) {
	if s.cfg.Store == nil {
		return nil, errorf(errUnavailable, "exports are not available: this API server has no object store (--store)")
	}
	return s.cfg.Store, nil
}

// startExport records the export job of the db in the path: 202 with it.
func (s *Server) startExport(w http.ResponseWriter, r *http.Request) {
	if _, err := s.objects(); err != nil {
		s.writeError(w, r, err)
		return
	}
	index, err := parseIndex(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, err := s.store.StartExport(r.Context(), tenantOf(r), index, newJobID(), s.cfg.MaxExportsPerTenant)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no db %d", index)
	case errors.Is(err, metadb.ErrTenantLimit):
		err = errorf(metadb.ErrTenantLimit, "you keep %d exports, the most allowed: delete an export first (DELETE /v1/exports/{id})",
			s.cfg.MaxExportsPerTenant)
	case errors.Is(err, metadb.ErrBadState):
		err = errorf(err, "cannot export db %d now: %v", index, err)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", tenantOf(r)).Int("index", index).Str("job", job.ID).Msg("db export started")
	writeJSON(w, http.StatusAccepted, exportJobView{Job: job.ID, jobView: viewJob(job)})
}

// listExports shows the caller's kept exports, oldest first.
func (s *Server) listExports(w http.ResponseWriter, r *http.Request) {
	jobs, err := s.store.Exports(r.Context(), tenantOf(r))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]exportView, len(jobs))
	for i, j := range jobs {
		out[i] = viewExport(j)
	}
	writeJSON(w, http.StatusOK, out)
}

// loadExport is the caller's export named in the path; another tenant's
// is not found alike.
func (s *Server) loadExport(r *http.Request) (*metadb.Job, error) {
	id := chi.URLParam(r, "id")
	if !jobID.MatchString(id) {
		return nil, errorf(metadb.ErrNotFound, "no export %q", clip(id))
	}
	j, err := s.store.Export(r.Context(), tenantOf(r), id)
	if errors.Is(err, metadb.ErrNotFound) {
		return nil, errorf(metadb.ErrNotFound, "no export %q", id)
	}
	return j, err
}

// downloadExport streams a finished export's file with its checksum in
// the headers (Digest and X-Checksum-SHA256); 409 while it runs or when it
// failed.
func (s *Server) downloadExport(w http.ResponseWriter, r *http.Request) {
	objs, err := s.objects()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	j, err := s.loadExport(r)
	if err == nil && j.State == metadb.JobRunning {
		err = errorf(metadb.ErrBadState, "export %s is not finished (%.0f%%): wait for it (GET /v1/jobs/%s)", j.ID, 100*j.Progress, j.ID)
	} else if err == nil && j.State != metadb.JobDone {
		err = errorf(metadb.ErrBadState, "export %s failed: %s", j.ID, j.Error)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, info, err := objs.Open(r.Context(), j.Data[metadb.ExportObject])
	if errors.Is(err, objstore.ErrNotFound) {
		err = errorf(metadb.ErrNotFound, "the file of export %s is gone from the store", j.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer body.Close()
	sum, err := hex.DecodeString(info.SHA256)
	if err != nil || len(sum) != 32 {
		s.writeError(w, r, fmt.Errorf("export %s: bad checksum %q in the store", j.ID, info.SHA256))
		return
	}
	// A big file takes longer than the server's write timeout, which is
	// sized for JSON answers.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s-db%d-%s.rdb"`, j.Tenant, j.Index, j.ID))
	h.Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(sum))
	h.Set("X-Checksum-SHA256", info.SHA256)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, body); err != nil {
		s.log.Warn().Err(err).Str("export", j.ID).Msg("export download broke off")
	}
}

// deleteExport removes the caller's export: its record, then its file. A
// running export is stopped. It answers the export as it was.
func (s *Server) deleteExport(w http.ResponseWriter, r *http.Request) {
	objs, err := s.objects()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	id := chi.URLParam(r, "id")
	auditTarget(r, tenantOf(r)+"/exports/"+clip(id))
	if !jobID.MatchString(id) {
		s.writeError(w, r, errorf(metadb.ErrNotFound, "no export %q", clip(id)))
		return
	}
	j, err := s.store.DeleteExport(r.Context(), tenantOf(r), id)
	if errors.Is(err, metadb.ErrNotFound) {
		err = errorf(metadb.ErrNotFound, "no export %q", id)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The record is gone first: a crash here leaves a file no one lists,
	// never a listed export without its file.
	if err := objs.Delete(r.Context(), j.Data[metadb.ExportObject]); err != nil {
		s.log.Warn().Err(err).Str("export", id).Msg("delete export file failed")
	}
	writeJSON(w, http.StatusOK, viewExport(j))
}

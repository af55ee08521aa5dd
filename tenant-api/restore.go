package tenantapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/metadb"
)

// A restore replaces a db's content with an RDB file: one of the tenant's
// exports, or a file the tenant uploads (see keeper/restore.go and
// master/import.go). An upload is checked as it streams into the store
// (magic, version, EOF, CRC-64: rdbfile.Check on the same bytes) and is
// refused, deleted, with nothing recorded, when it is corrupt, truncated
// or bigger than a restore into that db can need. Then the job starts at
// check, where the keeper loads the file in a scratch server and measures
// it; the POST waits for that verdict (up to RestoreWait) so a file that
// does not load (400) or does not fit (422) is refused in the answer, and
// the db was not touched. Only db 0 of a file is restored.

type restoreRequest struct {
	Export string `json:"export"`
}

// restoreView is a restore job as its POST answers it.
type restoreView struct {
	Job string `json:"job"`
	jobView
}

// restoreFields are a restore job's file and progress, for its view.
type restoreFields struct {
	From        string `json:"from"`
	Export      string `json:"export,omitempty"`
	FileBytes   int64  `json:"file_bytes"`
	UsedBytes   int64  `json:"used_bytes"`
	IgnoredKeys int64  `json:"ignored_keys"`
	KeysCopied  int64  `json:"keys_copied"`
	KeysTotal   int64  `json:"keys_total"`
	Refusal     string `json:"refusal,omitempty"`
}

func viewRestore(j *metadb.Job) *restoreFields {
	num := func(f string) int64 { n, _ := strconv.ParseInt(j.Data[f], 10, 64); return n }
	return &restoreFields{From: j.Data[metadb.RestoreFrom], Export: j.Data[metadb.RestoreExport],
		FileBytes: num(metadb.RestoreFileBytes), UsedBytes: num(metadb.RestoreUsedBytes),
		IgnoredKeys: num(metadb.RestoreIgnoredKeys), KeysCopied: num(metadb.ResizeKeysCopied),
		KeysTotal: num(metadb.ResizeKeysTotal), Refusal: j.Data[metadb.RestoreRefusal]}
}

// restoreUploadTime bounds the reading of a restore's request body.
const restoreUploadTime = 30 * time.Minute

// maxUpload is the biggest RDB file a restore into a db of quota bytes
// takes: RDB files are smaller than the data in memory, so twice the
// quota leaves room for any file whose data can fit.
func maxUpload(quota int64) int64 { return 2*quota + 1<<20 }

// uploadObject is where the upload of restore job id is kept.
func uploadObject(tenant, id string) string { return "uploads/" + tenant + "/" + id + ".rdb" }

// restoreDB starts a restore of the db named in the path (see above).
func (s *Server) restoreDB(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if s.cfg.Store == nil {
		s.writeError(w, r, errorf(errUnavailable, "restores are off: this API server has no object store (--store)"))
		return
	}
	// A big upload and the wait for the check outlast the server's read
	// and write timeouts, which suit JSON calls.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(restoreUploadTime))
	_ = rc.SetWriteDeadline(time.Now().Add(restoreUploadTime + s.cfg.RestoreWait + 10*time.Second))
	target, err := s.fillableDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	tenant, id := tenantOf(r), newJobID()
	var data map[string]string
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		data, err = s.restoreFromExport(w, r, tenant)
	case "application/octet-stream":
		data, err = s.upload(w, r, tenant, id, target)
	default:
		err = errorf(errMediaType, "content type %q is not supported: send application/json {\"export\":\"<id>\"} or an RDB file as application/octet-stream", clip(r.Header.Get("Content-Type")))
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job, err := s.store.StartRestore(ctx, tenant, target.Index, id, data)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		err = errorf(metadb.ErrNotFound, "no db %d", target.Index)
	case errors.Is(err, metadb.ErrBadState):
		err = errorf(err, "cannot restore into db %d: %v", target.Index, err)
	}
	if err != nil {
		s.dropUpload(data)
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", tenant).Int("index", target.Index).Str("from", data[metadb.RestoreFrom]).
		Str("object", data[metadb.RestoreObject]).Str("job", id).Msg("db restore started")
	if job, err = s.waitCheck(ctx, job); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, restoreView{Job: job.ID, jobView: viewJob(job)})
}

// restoreFromExport reads {"export": id} and finds that export of the
// tenant's, finished, with its file.
func (s *Server) restoreFromExport(w http.ResponseWriter, r *http.Request, tenant string) (map[string]string, error) {
	var req restoreRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		return nil, err
	}
	if req.Export == "" {
		return nil, errorf(errBadRequest, "name the export to restore: {\"export\":\"<id>\"}, or upload an RDB file as application/octet-stream")
	}
	notFound := errorf(metadb.ErrNotFound, "no export %q", clip(req.Export))
	if !jobID.MatchString(req.Export) {
		return nil, notFound
	}
	ex, err := s.store.Export(r.Context(), tenant, req.Export)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
		return nil, notFound
	case err != nil:
		return nil, err
	case ex.State != metadb.JobDone:
		return nil, errorf(metadb.ErrBadState, "export %s is %s, not done: only a finished export can be restored", ex.ID, ex.State)
	}
	name := ex.Data[metadb.ExportObject]
	info, err := s.cfg.Store.Stat(r.Context(), name)
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, errorf(metadb.ErrNotFound, "export %s has no file any more", ex.ID)
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{metadb.RestoreObject: name, metadb.RestoreFrom: metadb.RestoreFromExport,
		metadb.RestoreExport: ex.ID, metadb.RestoreFileBytes: strconv.FormatInt(info.Size, 10)}, nil
}

// upload streams the request body into the store as restore id's file
// while rdbfile.Check reads the same bytes. A body over maxUpload is 413,
// a corrupt or truncated file 400; either way the object is deleted.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, tenant, id string, target *metadb.DB) (map[string]string, error) {
	ctx := r.Context()
	limit := maxUpload(target.QuotaBytes)
	if r.ContentLength > limit {
		return nil, errorf(errTooLarge, "the RDB file has %d bytes, more than the %d a restore into a %s db takes", r.ContentLength, limit, target.Size)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	pr, pw := io.Pipe()
	checked := make(chan error, 1)
	go func() {
		_, err := rdbfile.Check(pr)
		_, _ = io.Copy(io.Discard, pr) // a refused file still streams into the store, then is deleted
		checked <- err
	}()
	name := uploadObject(tenant, id)
	info, err := s.cfg.Store.Put(ctx, name, io.TeeReader(body, pw))
	pw.CloseWithError(err)
	cerr := <-checked
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		err = errorf(errTooLarge, "the RDB file is larger than the %d bytes a restore into a %s db takes", limit, target.Size)
	case err != nil:
		err = fmt.Errorf("store the upload: %w", err)
	case errors.Is(cerr, rdbfile.ErrCorrupt):
		err = errorf(errBadRequest, "%v", cerr)
	case cerr != nil:
		err = fmt.Errorf("check the upload: %w", cerr)
	}
	data := map[string]string{metadb.RestoreObject: name, metadb.RestoreFrom: metadb.RestoreFromUpload,
		metadb.RestoreFileBytes: strconv.FormatInt(info.Size, 10)}
	if err != nil {
		s.dropUpload(data)
		return nil, err
	}
	return data, nil
}

// dropUpload deletes an uploaded file the API will not hand to a job.
func (s *Server) dropUpload(data map[string]string) {
	if data[metadb.RestoreFrom] != metadb.RestoreFromUpload {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Store.Delete(ctx, data[metadb.RestoreObject]); err != nil {
		s.log.Warn().Err(err).Str("object", data[metadb.RestoreObject]).Msg("delete refused upload failed")
	}
}

// waitCheck follows job until it leaves check, for at most RestoreWait
// or until ctx ends: a refused file is the call's error (400 corrupt, 422
// too big); otherwise the job as last read.
func (s *Server) waitCheck(ctx context.Context, job *metadb.Job) (*metadb.Job, error) {
	deadline := time.NewTimer(s.cfg.RestoreWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for job.State == metadb.JobRunning && job.Step == metadb.StepCheck {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return job, nil
		case <-tick.C:
		}
		j, err := s.store.Job(ctx, job.ID)
		if err != nil {
			return nil, err
		}
		job = j
	}
	if job.State != metadb.JobRunning {
		s.dropUpload(job.Data) // the keeper deletes it too; this covers a keeper that died in between
	}
	switch job.Data[metadb.RestoreRefusal] {
	case metadb.RestoreTooBig:
		return nil, errorf(metadb.ErrNoFit, "%s", job.Error)
	case metadb.RestoreCorrupt:
		return nil, errorf(errBadRequest, "%s", job.Error)
	}
	return job, nil
}

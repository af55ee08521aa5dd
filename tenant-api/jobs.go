package tenantapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
)

// jobView is a job as the API shows it.
type jobView struct {
	ID       string           `json:"id"`
	Kind     metadb.JobKind   `json:"kind"`
	State    string           `json:"state"`
	Step     metadb.Step      `json:"step"`
	Progress float64          `json:"progress"`
	Tenant   string           `json:"tenant"`
	Index    int              `json:"index"`
	Error    string           `json:"error"`
	Created  string           `json:"created"`
	Updated  string           `json:"updated"`
	Log      []metadb.JobStep `json:"log"`
	// BytesCopied and BytesTotal estimate a resize's copy, for progress
	// bars.
	BytesCopied int64 `json:"bytes_copied,omitempty"`
	BytesTotal  int64 `json:"bytes_total,omitempty"`
	// Pair, DBsMoved and DBsTotal follow a drain or a rebalance.
	Pair     string `json:"pair,omitempty"`
	DBsMoved int    `json:"dbs_moved,omitempty"`
	DBsTotal int    `json:"dbs_total,omitempty"`
	// Import follows an import (its source without credentials).
	Import *importFields `json:"import,omitempty"`
	// Restore follows a restore: its file and progress.
	Restore *restoreFields `json:"restore,omitempty"`
	// Export follows an export.
	Export *exportFields `json:"export,omitempty"`
}

func viewJob(j *metadb.Job) jobView {
	log := j.Log
	if log == nil {
		log = []metadb.JobStep{}
	}
	v := jobView{ID: j.ID, Kind: j.Kind, State: j.State, Step: j.Step, Progress: j.Progress,
		Tenant: j.Tenant, Index: j.Index, Error: j.Error, Created: j.Created, Updated: j.Updated, Log: log}
	v.BytesCopied, _ = strconv.ParseInt(j.Data[metadb.ResizeBytesCopied], 10, 64)
	v.BytesTotal, _ = strconv.ParseInt(j.Data[metadb.ResizeBytesTotal], 10, 64)
	if j.Kind == metadb.JobDrain || j.Kind == metadb.JobRebalance {
		v.Pair = j.Pair
		v.DBsMoved, v.DBsTotal = metadb.DrainProgress(j)
	}
	if j.Kind == metadb.JobImport {
		v.Import = viewImport(j)
	}
	if j.Kind == metadb.JobRestore {
		v.Restore = viewRestore(j)
	}
	if j.Kind == metadb.JobExport {
		v.Export = viewExportFields(j)
	}
	return v
}

// getJob shows one of the caller's jobs; anyone else's is not found.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	s.answerJob(w, r, func(j *metadb.Job) bool { return j.Tenant == tenantOf(r) })
}

// getAnyJob shows any job, for operators: those of every tenant and those
// of no tenant (a failover's replica replacement).
func (s *Server) getAnyJob(w http.ResponseWriter, r *http.Request) {
	s.answerJob(w, r, func(*metadb.Job) bool { return true })
}

// answerJob answers the job named in the path if the caller may see it,
// and "no job" alike when there is none and when it may not.
func (s *Server) answerJob(w http.ResponseWriter, r *http.Request, visible func(*metadb.Job) bool) {
	id := chi.URLParam(r, "id")
	notFound := errorf(metadb.ErrNotFound, "no job %q", clip(id))
	if !jobID.MatchString(id) {
		s.writeError(w, r, notFound)
		return
	}
	job, err := s.store.Job(r.Context(), id)
	if errors.Is(err, metadb.ErrNotFound) || (err == nil && !visible(job)) {
		err = notFound
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewJob(job))
}

// listJobs shows the newest jobs of every tenant, for operators.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	jobs, err := s.store.Jobs(r.Context(), adminJobsLimit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]jobView, len(jobs))
	for i, j := range jobs {
		out[i] = viewJob(j)
	}
	writeJSON(w, http.StatusOK, out)
}

// adminJobsLimit is how many of the newest jobs GET /v1/admin/jobs shows.
const adminJobsLimit = 100

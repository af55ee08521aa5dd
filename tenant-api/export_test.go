package tenantapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

type exportJobReply struct {
	Job string `json:"job"`
	jobReply
	Export struct {
		KeysCopied int64  `json:"keys_copied"`
		KeysTotal  int64  `json:"keys_total"`
		Size       int64  `json:"size"`
		SHA256     string `json:"sha256"`
		Download   string `json:"download"`
	} `json:"export"`
}

type exportReply struct {
	ID       string  `json:"id"`
	Index    int     `json:"index"`
	State    string  `json:"state"`
	Progress float64 `json:"progress"`
	Created  string  `json:"created"`
	Updated  string  `json:"updated"`
	Bytes    int64   `json:"bytes"`
	Keys     int64   `json:"keys"`
	SHA256   string  `json:"sha256"`
	Error    string  `json:"error"`
	Download string  `json:"download"`
}

// finishExport does what the keeper's dump does at its end: the file in
// the store, the job done with its figures.
func finishExport(t *testing.T, h *harness, objs objstore.Store, id string) []byte {
	t.Helper()
	ctx := t.Context()
	var buf bytes.Buffer
	w := rdbfile.NewWriter(&buf)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := h.store.Job(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	info, err := objs.Put(ctx, j.Data[metadb.ExportObject], bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.UpdateJob(ctx, nil, id, func(j *metadb.Job) error {
		j.Data[metadb.ExportSize] = strconv.FormatInt(info.Size, 10)
		j.Data[metadb.ExportSHA256] = info.SHA256
		j.Data[metadb.ResizeKeysCopied], j.Data[metadb.ResizeKeysTotal] = "0", "0"
		j.Advance(metadb.StepDump, metadb.StepDone, "keeper/k1", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExports: an export starts on an idle db only, refuses a resize and
// a drop of the db while it runs, is downloadable once done (with its
// checksum in the headers), is invisible to another tenant, counts toward
// the cap until deleted, and every start and delete, accepted or refused,
// leaves exactly one audit entry.
func TestExports(t *testing.T) {
	dir := t.TempDir()
	objs, err := objstore.NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *tenantapi.Config) { c.Store, c.MaxExportsPerTenant = objs, 2 })
	m, r := startPair(t, "1gb", 4)
	h.addPair("64M", m, r, "0-3")
	acme, other := h.signup("acme"), h.signup("other")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")

	// audited runs call and checks it left exactly one entry, of action
	// and result.
	audited := func(action string, ok bool, call func() reply) reply {
		t.Helper()
		before := len(h.auditAll())
		rep := call()
		all := h.auditAll()
		if len(all) != before+1 {
			t.Fatalf("%s: %d audit entries, want 1", action, len(all)-before)
		}
		if e := all[0]; e.Action != action || (e.Result == metadb.AuditOK) != ok || e.Tenant != "acme" {
			t.Fatalf("audit entry %+v, want action %s ok=%v", e, action, ok)
		}
		return rep
	}
	post := func(path string) func() reply {
		return func() reply { return h.do("POST", path, acme.Token, nil) }
	}
	audited(metadb.AuditDBExport, false, post("/v1/dbs/5/exports")).want(t, http.StatusNotFound)
	audited(metadb.AuditDBExport, false, post("/v1/dbs/x/exports")).want(t, http.StatusBadRequest)
	rep := audited(metadb.AuditDBExport, true, post("/v1/dbs/0/exports"))
	rep.want(t, http.StatusAccepted)
	var ex exportJobReply
	rep.decode(t, &ex)
	if ex.Job != ex.ID || ex.Kind != string(metadb.JobExport) || ex.Step != string(metadb.StepDump) ||
		ex.Export.Download != "/v1/exports/"+ex.ID {
		t.Fatalf("export job %+v", ex)
	}
	audited(metadb.AuditDBExport, false, post("/v1/dbs/0/exports")).want(t, http.StatusConflict)
	h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "256M"}).want(t, http.StatusConflict)
	if msg := h.do("DELETE", "/v1/dbs/0", acme.Token, nil); msg.status != http.StatusConflict || !strings.Contains(msg.errorText(t), "exported") {
		t.Fatalf("drop during the export: %d %s", msg.status, msg.body)
	}
	h.do("GET", "/v1/exports/"+ex.ID, acme.Token, nil).want(t, http.StatusConflict)

	// Another tenant sees nothing of it.
	h.do("GET", "/v1/exports/"+ex.ID, other.Token, nil).want(t, http.StatusNotFound)
	h.do("GET", "/v1/jobs/"+ex.ID, other.Token, nil).want(t, http.StatusNotFound)
	h.do("DELETE", "/v1/exports/"+ex.ID, other.Token, nil).want(t, http.StatusNotFound)
	var list []exportReply
	h.do("GET", "/v1/exports", other.Token, nil).decode(t, &list)
	if len(list) != 0 {
		t.Fatalf("other's exports: %+v", list)
	}

	file := finishExport(t, h, objs, ex.ID)
	got := h.do("GET", "/v1/exports/"+ex.ID, acme.Token, nil)
	got.want(t, http.StatusOK)
	sum := sha256.Sum256(file)
	for _, c := range []struct{ header, want string }{
		{"Content-Type", "application/octet-stream"},
		{"Content-Length", strconv.Itoa(len(file))},
		{"Content-Disposition", `attachment; filename="acme-db0-` + ex.ID + `.rdb"`},
		{"Digest", "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])},
		{"X-Checksum-SHA256", hex.EncodeToString(sum[:])},
	} {
		if v := got.header.Get(c.header); v != c.want {
			t.Errorf("%s: %q, want %q", c.header, v, c.want)
		}
	}
	if !bytes.Equal(got.body, file) {
		t.Fatalf("downloaded %d bytes, want the %d stored", len(got.body), len(file))
	}
	h.do("GET", "/v1/exports", acme.Token, nil).decode(t, &list)
	if len(list) != 1 || list[0].ID != ex.ID || list[0].State != metadb.JobDone || list[0].SHA256 != hex.EncodeToString(sum[:]) ||
		list[0].Bytes != int64(len(file)) || list[0].Index != 0 {
		t.Fatalf("exports: %+v", list)
	}
	var job exportJobReply
	h.do("GET", "/v1/jobs/"+ex.ID, acme.Token, nil).decode(t, &job)
	if job.Export.SHA256 != hex.EncodeToString(sum[:]) || job.Export.Size != int64(len(file)) || job.Progress != 1 {
		t.Fatalf("job view %+v", job)
	}

	// The cap: two kept exports, the second running.
	rep = audited(metadb.AuditDBExport, true, post("/v1/dbs/0/exports"))
	rep.want(t, http.StatusAccepted)
	var second exportJobReply
	rep.decode(t, &second)
	finishExport(t, h, objs, second.ID)
	rep = audited(metadb.AuditDBExport, false, post("/v1/dbs/0/exports"))
	if rep.status != http.StatusConflict || !strings.Contains(rep.errorText(t), "delete an export first") {
		t.Fatalf("export over the cap: %d %s", rep.status, rep.body)
	}
	del := func(id string) func() reply {
		return func() reply { return h.do("DELETE", "/v1/exports/"+id, acme.Token, nil) }
	}
	var gone exportReply
	audited(metadb.AuditExportDelete, true, del(ex.ID)).decode(t, &gone)
	if gone.ID != ex.ID || gone.State != metadb.JobDone {
		t.Fatalf("deleted export %+v", gone)
	}
	if _, err := objs.Stat(t.Context(), metadb.ExportObjectName("acme", ex.ID)); err != objstore.ErrNotFound {
		t.Fatalf("file after the delete: %v", err)
	}
	audited(metadb.AuditExportDelete, false, del(ex.ID)).want(t, http.StatusNotFound)
	h.do("GET", "/v1/exports/"+ex.ID, acme.Token, nil).want(t, http.StatusNotFound)
	audited(metadb.AuditDBExport, true, post("/v1/dbs/0/exports")).want(t, http.StatusAccepted)
}

// TestExportsWithoutStore: an API server without an object store answers
// 503 to the export routes that need it, and records nothing.
func TestExportsWithoutStore(t *testing.T) {
	h := newHarness(t, nil)
	acme := h.signup("acme")
	before := h.snapshot()
	h.do("POST", "/v1/dbs/0/exports", acme.Token, nil).want(t, http.StatusServiceUnavailable)
	h.do("GET", "/v1/exports/j1", acme.Token, nil).want(t, http.StatusServiceUnavailable)
	h.do("DELETE", "/v1/exports/j1", acme.Token, nil).want(t, http.StatusServiceUnavailable)
	if changed := diffKeys(before, h.snapshot()); len(changed) > 0 {
		t.Fatalf("refused calls changed %v", changed)
	}
}

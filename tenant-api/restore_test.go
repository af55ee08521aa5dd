package tenantapi_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// rdbOf writes an RDB file holding keys, each a small string, with
// payloads DUMPed by a real server.
func rdbOf(t *testing.T, keys ...string) []byte {
	t.Helper()
	c := redistest.Start(t).Client(t)
	c.Set(t.Context(), "v", "value", 0)
	dump := []byte(c.Dump(t.Context(), "v").Val())
	var buf bytes.Buffer
	w := rdbfile.NewWriter(&buf)
	for _, k := range keys {
		if err := w.Add(k, dump, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkingKeeper does in metadb what a keeper's check step does, with its
// verdict read from the file: a key "toobig" or "corrupt" in it refuses
// the file so (the keeper's real check is tested in keeper and e2e).
func checkingKeeper(t *testing.T, store *metadb.Store, objs objstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			jobs, _ := store.ActiveJobs(ctx)
			for _, j := range jobs {
				if j.Kind != metadb.JobRestore || j.Step != metadb.StepCheck {
					continue
				}
				r, _, err := objs.Open(ctx, j.Data[metadb.RestoreObject])
				if err != nil {
					continue
				}
				var b bytes.Buffer
				_, _ = b.ReadFrom(r)
				r.Close()
				switch {
				case bytes.Contains(b.Bytes(), []byte("toobig")):
					_, _ = store.RefuseRestore(ctx, j.ID, metadb.RestoreTooBig, "the RDB's data takes 70.0 MB; the db's size is 64M: resize first")
				case bytes.Contains(b.Bytes(), []byte("corrupt")):
					_, _ = store.RefuseRestore(ctx, j.ID, metadb.RestoreCorrupt, "corrupt RDB: the RDB does not load: Ziplist integrity check failed.")
				default:
					_, _ = store.UpdateJob(ctx, nil, j.ID, func(cur *metadb.Job) error {
						cur.Advance(metadb.StepCheck, metadb.StepReadOnly, "keeper/test", time.Now())
						return nil
					})
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

// uploads lists the objects under uploads/ in the store's directory.
func uploads(t *testing.T, objs *objstore.Local) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(filepath.Join(objs.Dir(), "uploads"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".rdb") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestRestoreRefusals: every bad restore is refused with its status and a
// clear error, and changes nothing: a corrupt, truncated or foreign upload
// (400, checked while it streams in), an oversize one (413, by its length
// or as it streams), a file the check refuses as too big (422) or as not
// loading (400), an unknown or another tenant's export (404), a wrong
// content type (415), a db with a running restore (409, which also
// refuses its drop, resize and import). An accepted upload answers 202
// with the job past check. Every call leaves exactly one audit entry.
func TestRestoreRefusals(t *testing.T) {
	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(c *tenantapi.Config) { c.Store = objs; c.RestoreWait = 10 * time.Second })
	ctx := context.Background()
	m, r := startPair(t, "1gb", 4)
	h.addPair("64M", m, r, "0-3")
	acme, other := h.signup("acme"), h.signup("other")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")
	h.do("POST", "/v1/dbs", other.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "other", 0, created.Job, "127.0.0.1:7379")
	// A small quota keeps the oversize uploads small: the cap is 2 × 1 MiB + 1 MiB.
	if _, err := h.store.UpdateDB(ctx, nil, "test", "acme", 0, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.QuotaBytes = 1 << 20
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	checkingKeeper(t, h.store, objs)
	acmeDB, _ := h.store.DB(ctx, "acme", 0)
	slot := m.ClientDB(t, acmeDB.SlotDB)
	if err := slot.Set(ctx, "mine", "old", 0).Err(); err != nil {
		t.Fatal(err)
	}

	good := rdbOf(t, "a", "b")
	upload := func(token string, body []byte, ct string) reply {
		return h.send(request{method: "POST", path: "/v1/dbs/0/restore", token: token, body: body, contentType: ct})
	}
	calls := 0
	for _, tc := range []struct {
		name   string
		body   []byte
		ct     string
		status int
		says   string
	}{
		{"not an RDB", []byte("*1\r\n$4\r\nPING\r\n"), "application/octet-stream", http.StatusBadRequest, "corrupt RDB: not an RDB file"},
		{"truncated", good[:len(good)-3], "application/octet-stream", http.StatusBadRequest, "corrupt RDB: truncated"},
		{"altered", append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1), "application/octet-stream", http.StatusBadRequest, "checksum mismatch"},
		{"empty", nil, "application/octet-stream", http.StatusBadRequest, "shorter than an RDB header"},
		{"oversize", bytes.Repeat([]byte("x"), 3<<20+2), "application/octet-stream", http.StatusRequestEntityTooLarge, "more than the 3145728 a restore into a 64M db takes"},
		{"text", good, "text/plain", http.StatusUnsupportedMediaType, "send application/json"},
		{"too big", rdbOf(t, "toobig"), "application/octet-stream", http.StatusUnprocessableEntity, "the db's size is 64M: resize first"},
		{"does not load", rdbOf(t, "corrupt"), "application/octet-stream", http.StatusBadRequest, "Ziplist integrity check failed"},
	} {
		rep := upload(acme.Token, tc.body, tc.ct)
		calls++
		rep.want(t, tc.status)
		if e := rep.errorText(t); !strings.Contains(e, tc.says) {
			t.Fatalf("%s: error %q, want it to say %q", tc.name, e, tc.says)
		}
	}
	if left := uploads(t, objs); len(left) > 0 {
		t.Fatalf("refused uploads left in the store: %v", left)
	}
	if jobs, _ := h.store.ActiveJobs(ctx); len(jobs) != 0 {
		t.Fatalf("refused restores left %d running jobs", len(jobs))
	}
	db, _ := h.store.DB(ctx, "acme", 0)
	if db.ReadOnly != "" || db.State != metadb.DBActive {
		t.Fatalf("db after the refusals: %+v", db)
	}
	if v := slot.Get(ctx, "mine").Val(); v != "old" || slot.DBSize(ctx).Val() != 1 {
		t.Fatalf("the refusals changed the db's data: mine=%q, %d keys", v, slot.DBSize(ctx).Val())
	}

	// An oversize upload without a length is cut off as it streams.
	req, _ := http.NewRequest("POST", h.srv.URL+"/v1/dbs/0/restore", struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte("y"), 4<<20))})
	req.Header.Set("Authorization", "Bearer "+acme.Token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	calls++
	if resp.StatusCode != http.StatusRequestEntityTooLarge || len(uploads(t, objs)) > 0 {
		t.Fatalf("streamed oversize upload: %d, uploads %v", resp.StatusCode, uploads(t, objs))
	}

	// Exports: unknown, not an export, another tenant's (finished, with
	// its file), one still running.
	theirs, err := h.store.StartExport(ctx, "other", 0, "exp-other", 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(ctx, theirs.Data[metadb.ExportObject], bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.UpdateJob(ctx, nil, theirs.ID, func(j *metadb.Job) error {
		j.Advance(metadb.StepDump, metadb.StepDone, "keeper/test", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.StartExport(ctx, "acme", 0, "exp-running", 10); err != nil {
		t.Fatal(err)
	}
	h.do("POST", "/v1/dbs/0/restore", acme.Token, map[string]string{"export": "exp-running"}).want(t, http.StatusConflict)
	calls++
	if _, err := h.store.UpdateJob(ctx, nil, "exp-running", func(j *metadb.Job) error { j.State = metadb.JobFailed; return nil }); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"nope", created.Job, "../../etc", theirs.ID} {
		h.do("POST", "/v1/dbs/0/restore", acme.Token, map[string]string{"export": id}).want(t, http.StatusNotFound)
		calls++
	}
	h.do("POST", "/v1/dbs/0/restore", acme.Token, map[string]string{}).want(t, http.StatusBadRequest)
	calls++

	// Accepted: 202, past check; the db is busy meanwhile.
	rep := upload(acme.Token, good, "application/octet-stream")
	calls++
	rep.want(t, http.StatusAccepted)
	var ok struct {
		Job string `json:"job"`
		jobReply
		Restore map[string]any `json:"restore"`
	}
	rep.decode(t, &ok)
	if ok.Step != string(metadb.StepReadOnly) || ok.Restore["from"] != "upload" || ok.Restore["file_bytes"] != float64(len(good)) {
		t.Fatalf("accepted restore: %s", rep.body)
	}
	if n := len(uploads(t, objs)); n != 1 {
		t.Fatalf("%d uploads kept, want the accepted one", n)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/dbs/0/restore", ""},
		{"DELETE", "/v1/dbs/0", ""},
		{"PATCH", "/v1/dbs/0", "256M"},
	} {
		var rep reply
		switch c.method {
		case "POST":
			rep = upload(acme.Token, good, "application/octet-stream")
		case "PATCH":
			rep = h.do(c.method, c.path, acme.Token, map[string]string{"size": c.body})
		default:
			rep = h.do(c.method, c.path, acme.Token, nil)
		}
		if rep.status != http.StatusConflict {
			t.Fatalf("%s %s during a restore: %d %s, want 409", c.method, c.path, rep.status, rep.body)
		}
		calls++
	}
	if n := len(uploads(t, objs)); n != 1 {
		t.Fatalf("%d uploads kept after a refused second restore, want 1", n)
	}
	// Read-only (here: while its own restore loads), a db refuses a
	// restore before its body is read.
	if _, err := h.store.SetReadOnly(ctx, nil, "test", "acme", 0, metadb.ReadOnlyRestoring); err != nil {
		t.Fatal(err)
	}
	rep = h.do("POST", "/v1/dbs/0/restore", acme.Token, map[string]string{"export": theirs.ID})
	calls++
	if rep.status != http.StatusConflict || !strings.Contains(rep.errorText(t), "read-only while restoring") {
		t.Fatalf("restore of a read-only db: %d %s", rep.status, rep.body)
	}
	h.do("GET", "/v1/jobs/"+ok.Job, other.Token, nil).want(t, http.StatusNotFound)

	count := 0
	for _, e := range h.auditAll() {
		if e.Action == metadb.AuditDBRestore {
			count++
			if e.Target != "acme/0" || e.Tenant != "acme" {
				t.Fatalf("audit entry %+v", e)
			}
		}
	}
	// The drop and the resize have their own actions; of the refusals,
	// the audit gate records 10 per tenant and action a minute.
	if want := min(calls-3, 10) + 1; count != want {
		t.Fatalf("%d db.restore audit entries, want %d", count, want)
	}
}

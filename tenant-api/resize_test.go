package tenantapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// TestResizeStart: PATCH size starts a resize job (202 with the job, db
// resizing, job at its reserve step with the target recorded); a second
// resize while it runs, a shrink whose data does not fit and the same size
// are refused before anything moves.
func TestResizeStart(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	m, r := startPair(t, "2gb", 4)
	h.addPair("64M", m, r, "0-3")
	bm, br := startPair(t, "2gb", 4)
	h.addPair("256M", bm, br, "0-3")
	acme := h.signup("acme")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")

	// A shrink is refused when the measured data does not fit.
	if _, err := h.store.UpdateDB(ctx, nil, "test", "acme", 0, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		db.UsedBytes = 40 << 20
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	before := h.snapshot()
	rep := h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "32M"})
	rep.want(t, http.StatusUnprocessableEntity)
	if got := rep.errorText(t); !strings.Contains(got, "more than 32M") {
		t.Fatalf("shrink that does not fit: error %q", got)
	}
	if changed := diffKeys(before, h.snapshot()); len(changed) > 0 {
		t.Fatalf("a refused resize changed %v", changed)
	}

	var ref struct{ Job string }
	rep = h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "256M"})
	rep.want(t, http.StatusAccepted)
	rep.decode(t, &ref)
	j, err := h.store.Job(ctx, ref.Job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != metadb.JobResize || j.Step != metadb.StepReserve || j.Data[metadb.ResizeToSize] != "256M" || j.Pair != created.Slot.Pair {
		t.Fatalf("job: %+v, want a resize to 256M at reserve", j)
	}
	var db dbReply
	h.do("GET", "/v1/dbs/0", acme.Token, nil).decode(t, &db)
	if db.State != metadb.DBResizing || db.Job != ref.Job {
		t.Fatalf("db during resize: %+v", db)
	}
	rep = h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "128M"})
	rep.want(t, http.StatusConflict)
	if got := rep.errorText(t); !strings.Contains(got, "is resizing") {
		t.Fatalf("second resize: error %q", got)
	}
	var jv jobReply
	h.do("GET", "/v1/jobs/"+ref.Job, acme.Token, nil).decode(t, &jv)
	if jv.Kind != string(metadb.JobResize) || jv.Step != string(metadb.StepReserve) {
		t.Fatalf("job view: %+v", jv)
	}
}

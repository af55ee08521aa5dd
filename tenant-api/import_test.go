package tenantapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// TestImportStart: a refused import (bad URL, the cluster's own server, a
// missing password, another tenant's db) changes nothing; an accepted one
// records the job with the password, and no answer, job view or audit
// entry shows it; a second import is a conflict; a cancellation is
// recorded once and a cut-over after it is a conflict.
func TestImportStart(t *testing.T) {
	h := newHarness(t, func(c *tenantapi.Config) { c.ImportAllow = "127.0.0.0/8" })
	ctx := context.Background()
	m, r := startPair(t, "1gb", 4)
	h.addPair("64M", m, r, "0-3")
	acme, other := h.signup("acme"), h.signup("other")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")
	h.do("POST", "/v1/dbs", other.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "other", 0, created.Job, "127.0.0.1:7379")

	const secret = "pw-of-the-source-42"
	src := redistest.Start(t, "notify-keyspace-events", "KEA")
	if err := src.Client(t).ConfigSet(ctx, "requirepass", secret).Err(); err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf("redis://:%s@%s", secret, src.Addr)
	before := h.snapshot()
	for _, tc := range []struct {
		name, token, path, source string
		status                    int
	}{
		{"bad URL", acme.Token, "/v1/dbs/0/imports", "redis://" + src.Addr + "/1", http.StatusBadRequest},
		{"a pair's master", acme.Token, "/v1/dbs/0/imports", "redis://" + m.Addr, http.StatusUnprocessableEntity},
		{"a pair's replica", acme.Token, "/v1/dbs/0/imports", "redis://" + r.Addr, http.StatusUnprocessableEntity},
		{"no password", acme.Token, "/v1/dbs/0/imports", "redis://" + src.Addr, http.StatusUnprocessableEntity},
		{"no such db", acme.Token, "/v1/dbs/5/imports", good, http.StatusNotFound},
	} {
		rep := h.do("POST", tc.path, tc.token, map[string]any{"source": tc.source})
		rep.want(t, tc.status)
		if strings.Contains(string(rep.body), secret) {
			t.Fatalf("%s: the answer shows the password: %s", tc.name, rep.body)
		}
	}
	if changed := diffKeys(before, h.snapshot()); len(changed) > 0 {
		t.Fatalf("refused imports changed %v", changed)
	}

	rep := h.do("POST", "/v1/dbs/0/imports", acme.Token, map[string]any{"source": good})
	rep.want(t, http.StatusAccepted)
	var ref struct {
		Job string `json:"job"`
		jobReply
		Import map[string]any `json:"import"`
	}
	rep.decode(t, &ref)
	j, err := h.store.Job(ctx, ref.Job)
	if err != nil {
		t.Fatal(err)
	}
	if j.Kind != metadb.JobImport || j.Step != metadb.StepReadOnly || j.Data[metadb.ImportPassword] != secret ||
		j.Data[metadb.ImportSource] != "redis://"+src.Addr {
		t.Fatalf("job: %+v", j)
	}
	h.do("POST", "/v1/dbs/0/imports", acme.Token, map[string]any{"source": good}).want(t, http.StatusConflict)
	// Another tenant cannot see, cut over or cancel it.
	h.do("GET", "/v1/jobs/"+ref.Job, other.Token, nil).want(t, http.StatusNotFound)
	h.do("POST", "/v1/dbs/0/imports/"+ref.Job+"/cutover", other.Token, nil).want(t, http.StatusNotFound)
	h.do("DELETE", "/v1/dbs/0/imports/"+ref.Job, other.Token, nil).want(t, http.StatusNotFound)
	h.do("DELETE", "/v1/dbs/1/imports/"+ref.Job, acme.Token, nil).want(t, http.StatusNotFound)

	h.do("DELETE", "/v1/dbs/0/imports/"+ref.Job, acme.Token, nil).want(t, http.StatusAccepted)
	h.do("DELETE", "/v1/dbs/0/imports/"+ref.Job, acme.Token, nil).want(t, http.StatusAccepted)
	h.do("POST", "/v1/dbs/0/imports/"+ref.Job+"/cutover", acme.Token, nil).want(t, http.StatusConflict)
	for _, path := range []string{"/v1/jobs/" + ref.Job, "/v1/admin/jobs/" + ref.Job, "/v1/admin/jobs"} {
		token := acme.Token
		if strings.Contains(path, "admin") {
			token = adminToken
		}
		rep := h.do("GET", path, token, nil)
		rep.want(t, http.StatusOK)
		if strings.Contains(string(rep.body), secret) {
			t.Fatalf("GET %s shows the password", path)
		}
		if !strings.Contains(string(rep.body), `"cancelled":true`) {
			t.Fatalf("GET %s: %s, want the import cancelled", path, rep.body)
		}
	}
	count := map[string]int{}
	for _, e := range h.auditAll() {
		if strings.Contains(fmt.Sprint(e), secret) {
			t.Fatalf("audit entry shows the password: %+v", e)
		}
		count[e.Action]++
	}
	// 5 refused + 1 accepted + 1 conflict; the other tenant's and the
	// wrong db's calls; two cancels, one refused cut-over.
	if count[metadb.AuditDBImport] != 7 || count[metadb.AuditDBImportCancel] != 4 || count[metadb.AuditDBImportCutover] != 2 {
		t.Fatalf("audit counts %v", count)
	}
}

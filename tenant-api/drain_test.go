package tenantapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
)

// TestDrainPair: the refusals (unknown pair, the last active pair of its
// pool, too little room on the others, a tenant's token) change nothing;
// with room, a drain job starts, the pair is draining (no new db lands on
// it), and asking again answers the same job.
func TestDrainPair(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 4)
	p := h.addPair("64M", m, r, "0-3")
	acme := h.signup("acme")
	for range 3 {
		var created dbReply
		h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	}

	refused := func(path, token string, status int, want string) {
		t.Helper()
		before := h.snapshot()
		rp := h.do("POST", path, token, nil)
		rp.want(t, status)
		if got := rp.errorText(t); !strings.Contains(got, want) {
			t.Errorf("POST %s: error %q, want it to say %q", path, got, want)
		}
		if d := diffKeys(before, h.snapshot()); len(d) > 0 {
			t.Errorf("refused POST %s changed %v", path, d)
		}
	}
	refused("/v1/admin/pairs/p999/drain", adminToken, http.StatusNotFound, `no pair "p999"`)
	refused("/v1/admin/pairs/nope!/drain", adminToken, http.StatusNotFound, "no pair")
	refused("/v1/admin/pairs/"+p.ID+"/drain", adminToken, http.StatusConflict, "last active pair of pool 64M")
	refused("/v1/admin/pairs/"+p.ID+"/drain", acme.Token, http.StatusForbidden, "admin token required")

	m2, r2 := startPair(t, "2gb", 2)
	h.addPair("64M", m2, r2, "0-1")
	refused("/v1/admin/pairs/"+p.ID+"/drain", adminToken, http.StatusConflict, "holds 3 dbs but the other active pairs of pool 64M have 2 free")

	m3, r3 := startPair(t, "2gb", 2)
	h.addPair("64M", m3, r3, "0-1")
	var ref struct {
		Job string `json:"job"`
	}
	rp := h.do("POST", "/v1/admin/pairs/"+p.ID+"/drain", adminToken, nil)
	rp.want(t, http.StatusAccepted)
	rp.decode(t, &ref)
	var again struct {
		Job string `json:"job"`
	}
	rp = h.do("POST", "/v1/admin/pairs/"+p.ID+"/drain", adminToken, nil)
	rp.want(t, http.StatusOK)
	rp.decode(t, &again)
	if again.Job != ref.Job {
		t.Fatalf("second drain answered job %s, want %s", again.Job, ref.Job)
	}
	var job struct {
		jobReply
		Pair string `json:"pair"`
	}
	h.do("GET", "/v1/admin/jobs/"+ref.Job, adminToken, nil).decode(t, &job)
	if job.Kind != string(metadb.JobDrain) || job.State != metadb.JobRunning || job.Step != string(metadb.StepPlan) || job.Pair != p.ID {
		t.Fatalf("drain job: %+v", job)
	}
	var pools []struct {
		Size  string      `json:"size"`
		Total int         `json:"total"`
		Free  int         `json:"free"`
		Pairs []pairReply `json:"pairs"`
	}
	h.do("GET", "/v1/admin/pools", adminToken, nil).decode(t, &pools)
	for _, pool := range pools {
		for _, pr := range pool.Pairs {
			if pr.ID == p.ID && pr.State != "draining" {
				t.Fatalf("pair %s is %s, want draining", pr.ID, pr.State)
			}
		}
	}
	// A new db goes to another pair.
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	if created.Slot.Pair == p.ID {
		t.Fatalf("a new db was placed on the draining pair: %+v", created)
	}
}

// TestRebalancePool: a bad size and a pool of one active pair are refused
// and change nothing; with two pairs a rebalance job starts, and asking
// again while it runs answers the same job.
func TestRebalancePool(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 4)
	h.addPair("64M", m, r, "0-3")
	for _, tc := range []struct {
		path   string
		status int
		want   string
	}{
		{"/v1/admin/pools/65M/rebalance", http.StatusBadRequest, "65M"},
		{"/v1/admin/pools/64M/rebalance", http.StatusConflict, "pool 64M has 1 active pairs, a rebalance needs 2 or more"},
		{"/v1/admin/pools/256M/rebalance", http.StatusConflict, "pool 256M has 0 active pairs"},
	} {
		before := h.snapshot()
		rp := h.do("POST", tc.path, adminToken, nil)
		rp.want(t, tc.status)
		if got := rp.errorText(t); !strings.Contains(got, tc.want) {
			t.Errorf("POST %s: error %q, want it to say %q", tc.path, got, tc.want)
		}
		if d := diffKeys(before, h.snapshot()); len(d) > 0 {
			t.Errorf("refused POST %s changed %v", tc.path, d)
		}
	}
	m2, r2 := startPair(t, "2gb", 4)
	h.addPair("64M", m2, r2, "0-3")
	var ref, again struct {
		Job string `json:"job"`
	}
	rp := h.do("POST", "/v1/admin/pools/64M/rebalance", adminToken, nil)
	rp.want(t, http.StatusAccepted)
	rp.decode(t, &ref)
	rp = h.do("POST", "/v1/admin/pools/64M/rebalance", adminToken, nil)
	rp.want(t, http.StatusOK)
	rp.decode(t, &again)
	if again.Job != ref.Job {
		t.Fatalf("second rebalance answered job %s, want %s", again.Job, ref.Job)
	}
	var job jobReply
	h.do("GET", "/v1/admin/jobs/"+ref.Job, adminToken, nil).decode(t, &job)
	if job.Kind != string(metadb.JobRebalance) || job.State != metadb.JobRunning {
		t.Fatalf("rebalance job: %+v", job)
	}
}

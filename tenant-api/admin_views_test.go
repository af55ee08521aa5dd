package tenantapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

// TestAdminJobAndPairHealth: the admin reads any job by its id, a tenant's
// and one of no tenant (a failover's replica replacement), which a tenant
// token may not; the pools view carries the watching keeper's last health
// report of each pair, and none for a pair no keeper reported on.
func TestAdminJobAndPairHealth(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 4)
	bm, br := startPair(t, "2gb", 4)
	p := h.addPair("64M", m, r, "0-3")
	quiet := h.addPair("64M", bm, br, "0-3")
	acme := h.signup("acme")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)

	ctx := t.Context()
	report := &metadb.PairHealth{Pair: p.ID, Keeper: "k1", At: time.Now().UTC().Truncate(time.Second),
		Master: metadb.NodeHealth{Addr: m.Addr, Up: true}, Replica: metadb.NodeHealth{Addr: r.Addr, Up: false},
		ReplicaState: "online", LagSec: 3, LagBytes: 4096}
	if err := h.store.SetPairHealth(ctx, report); err != nil {
		t.Fatal(err)
	}
	var pools []struct {
		Size  string `json:"size"`
		Total int    `json:"total"`
		Free  int    `json:"free"`
		Pairs []struct {
			pairReply
			Health *struct {
				Keeper       string    `json:"keeper"`
				At           time.Time `json:"at"`
				MasterUp     bool      `json:"master_up"`
				ReplicaUp    bool      `json:"replica_up"`
				ReplicaState string    `json:"replica_state"`
				LagSec       int64     `json:"lag_sec"`
				LagBytes     int64     `json:"lag_bytes"`
			} `json:"health"`
		} `json:"pairs"`
	}
	h.do("GET", "/v1/admin/pools", adminToken, nil).decode(t, &pools)
	seen := 0
	for _, pool := range pools {
		for _, pr := range pool.Pairs {
			switch pr.ID {
			case p.ID:
				seen++
				hv := pr.Health
				if hv == nil || hv.Keeper != "k1" || !hv.At.Equal(report.At) || !hv.MasterUp || hv.ReplicaUp ||
					hv.ReplicaState != "online" || hv.LagSec != 3 || hv.LagBytes != 4096 {
					t.Errorf("pair %s health: got %+v, want the report %+v", pr.ID, hv, report)
				}
			case quiet.ID:
				seen++
				if pr.Health != nil {
					t.Errorf("pair %s health: got %+v, want none (no report)", pr.ID, pr.Health)
				}
			}
		}
	}
	if seen != 2 {
		t.Fatalf("pools view lists %d of the 2 pairs: %+v", seen, pools)
	}

	if _, err := h.store.UpdatePair(ctx, nil, quiet.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Heartbeat(ctx, metadb.KindKeeper, metadb.Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, replace, err := h.store.Promote(ctx, metadb.Promotion{Keeper: "k1", Pair: quiet.ID, OldMaster: bm.Addr, NewMaster: br.Addr, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, token string
		status            int
		kind              metadb.JobKind
	}{
		{"admin, a tenant's job", "/v1/admin/jobs/" + created.Job, adminToken, http.StatusOK, metadb.JobCreate},
		{"admin, a job of no tenant", "/v1/admin/jobs/" + replace.ID, adminToken, http.StatusOK, metadb.JobReplace},
		{"admin, no such job", "/v1/admin/jobs/nope", adminToken, http.StatusNotFound, ""},
		{"tenant on the admin route", "/v1/admin/jobs/" + created.Job, acme.Token, http.StatusForbidden, ""},
		{"tenant, a job of no tenant", "/v1/jobs/" + replace.ID, acme.Token, http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rp := h.do("GET", tc.path, tc.token, nil)
			rp.want(t, tc.status)
			if tc.status != http.StatusOK {
				return
			}
			var j jobReply
			rp.decode(t, &j)
			if j.Kind != string(tc.kind) {
				t.Errorf("got kind %q, want %q", j.Kind, tc.kind)
			}
		})
	}
}

package tenantapi_test

import (
	"net/http"
	"strconv"
	"testing"
)

// TestTenantSeesOnlyItsOwn: a tenant's token lists and reads only that
// tenant's dbs and jobs, and reaches no admin route; the admin token acts
// as no tenant. The dashboard relies on this: it shows what the API gives
// the token, so the API is where isolation is enforced.
func TestTenantSeesOnlyItsOwn(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 16)
	h.addPair("64M", m, r, "0-15")
	alpha, bravo := h.signup("alpha"), h.signup("bravo")
	mine := map[string][]dbReply{}
	for _, tn := range []signupReply{alpha, bravo} {
		for i := 0; i < 2; i++ {
			rep := h.do("POST", "/v1/dbs", tn.Token, map[string]string{"size": "64M"})
			rep.want(t, http.StatusCreated)
			var db dbReply
			rep.decode(t, &db)
			finishCreate(t, h.store, tn.Tenant, db.Index, db.Job, "127.0.0.1:7379")
			mine[tn.Tenant] = append(mine[tn.Tenant], db)
		}
	}

	for _, tn := range []signupReply{alpha, bravo} {
		var got []dbReply
		rep := h.do("GET", "/v1/dbs", tn.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &got)
		if len(got) != 2 {
			t.Fatalf("%s lists %d dbs, want its own 2: %s", tn.Tenant, len(got), rep.body)
		}
		for i, db := range got {
			want := mine[tn.Tenant][i]
			if db.Index != want.Index || db.Slot != want.Slot || db.URL != "redis://"+tn.Tenant+"@127.0.0.1:7379/"+strconv.Itoa(db.Index) {
				t.Fatalf("%s's db %d: got slot %+v url %q, want its own slot %+v", tn.Tenant, i, db.Slot, db.URL, want.Slot)
			}
			var one dbReply
			h.do("GET", "/v1/dbs/"+strconv.Itoa(db.Index), tn.Token, nil).decode(t, &one)
			if one.Slot != want.Slot {
				t.Fatalf("%s GET /v1/dbs/%d: slot %+v, want its own %+v", tn.Tenant, db.Index, one.Slot, want.Slot)
			}
		}
	}
	// Same indexes, other slots: bravo's index 0 is not alpha's.
	if mine["alpha"][0].Slot == mine["bravo"][0].Slot {
		t.Fatal("alpha and bravo share a slot")
	}
	h.do("GET", "/v1/jobs/"+mine["alpha"][0].Job, bravo.Token, nil).want(t, http.StatusNotFound)
	h.do("GET", "/v1/jobs/"+mine["alpha"][0].Job, alpha.Token, nil).want(t, http.StatusOK)

	admin := []struct{ method, path string }{
		{"GET", "/v1/admin/pools"}, {"GET", "/v1/admin/proxies"}, {"GET", "/v1/admin/keepers"},
		{"GET", "/v1/admin/jobs"}, {"GET", "/v1/admin/spares"}, {"POST", "/v1/admin/spares"},
		{"POST", "/v1/admin/pools/64M/pairs"}, {"GET", "/v1/admin/audit"}, {"GET", "/v1/admin/tenants"},
	}
	for _, a := range admin {
		rep := h.send(request{method: a.method, path: a.path, token: alpha.Token, body: "{}"})
		if rep.status != http.StatusForbidden {
			t.Fatalf("tenant token %s %s: got %d, want 403 (body %s)", a.method, a.path, rep.status, rep.body)
		}
		rep = h.send(request{method: a.method, path: a.path, body: "{}"})
		if rep.status != http.StatusUnauthorized {
			t.Fatalf("no token %s %s: got %d, want 401", a.method, a.path, rep.status)
		}
	}
	for _, p := range []string{"/v1/dbs", "/v1/dbs/0", "/v1/jobs/" + mine["alpha"][0].Job} {
		h.do("GET", p, adminToken, nil).want(t, http.StatusUnauthorized)
	}
}

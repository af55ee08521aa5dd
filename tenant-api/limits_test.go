package tenantapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
)

type limitsReply struct {
	Tenant         string `json:"tenant"`
	MaxConnections int64  `json:"max_connections"`
	OpsPerSec      int64  `json:"ops_per_sec"`
	Configured     struct {
		MaxConnections int64 `json:"max_connections"`
		OpsPerSec      int64 `json:"ops_per_sec"`
	} `json:"configured"`
}

func TestLimits(t *testing.T) {
	h := newHarness(t, nil)
	acme := h.signup("acme")
	h.signup("zeta")
	get := func(path, token string) limitsReply {
		t.Helper()
		r := h.do("GET", path, token, nil)
		r.want(t, http.StatusOK)
		var l limitsReply
		r.decode(t, &l)
		return l
	}
	const path = "/v1/admin/tenants/acme/limits"

	if l := get(path, adminToken); l.Tenant != "acme" || l.MaxConnections != metadb.DefaultMaxConnections || l.OpsPerSec != 0 ||
		l.Configured.MaxConnections != 0 || l.Configured.OpsPerSec != 0 {
		t.Errorf("default limits: got %+v, want %d connections, no ops/s limit, nothing configured", l, metadb.DefaultMaxConnections)
	}
	v0, _ := h.store.Version(t.Context())
	r := h.do("PUT", path, adminToken, map[string]int64{"max_connections": 20, "ops_per_sec": 5000})
	r.want(t, http.StatusOK)
	var l limitsReply
	r.decode(t, &l)
	if l.MaxConnections != 20 || l.OpsPerSec != 5000 || l.Configured.MaxConnections != 20 || l.Configured.OpsPerSec != 5000 {
		t.Errorf("PUT answer: got %+v", l)
	}
	if v, _ := h.store.Version(t.Context()); v != v0+1 {
		t.Errorf("version after PUT: got %d, want %d", v, v0+1)
	}
	if tn, _ := h.store.Tenant(t.Context(), "acme"); tn.Limits != (metadb.Limits{MaxConnections: 20, OpsPerSec: 5000}) {
		t.Errorf("stored: got %+v", tn.Limits)
	}
	// The tenant reads its own.
	if l := get("/v1/limits", acme.Token); l.Tenant != "acme" || l.MaxConnections != 20 || l.OpsPerSec != 5000 {
		t.Errorf("GET /v1/limits: got %+v", l)
	}
	// Absent is the default.
	r = h.do("PUT", path, adminToken, map[string]int64{"ops_per_sec": 10})
	r.want(t, http.StatusOK)
	if l := get(path, adminToken); l.MaxConnections != metadb.DefaultMaxConnections || l.OpsPerSec != 10 || l.Configured.MaxConnections != 0 {
		t.Errorf("after PUT of ops only: got %+v", l)
	}
	// The list, by name.
	r = h.do("GET", "/v1/admin/tenants", adminToken, nil)
	r.want(t, http.StatusOK)
	var all []limitsReply
	r.decode(t, &all)
	if len(all) != 2 || all[0].Tenant != "acme" || all[0].OpsPerSec != 10 || all[1].Tenant != "zeta" || all[1].MaxConnections != metadb.DefaultMaxConnections {
		t.Errorf("GET /v1/admin/tenants: got %+v", all)
	}

	before := h.snapshot()
	bad := []struct {
		name, method, path, token string
		body                      any
		status                    int
		text                      string
	}{
		{"negative connections", "PUT", path, adminToken, map[string]int64{"max_connections": -1}, 400, "max_connections"},
		{"negative ops", "PUT", path, adminToken, map[string]int64{"ops_per_sec": -1}, 400, "ops_per_sec"},
		{"absurd connections", "PUT", path, adminToken, map[string]int64{"max_connections": metadb.MaxMaxConnections + 1}, 400, "max_connections"},
		{"absurd ops", "PUT", path, adminToken, map[string]int64{"ops_per_sec": metadb.MaxOpsPerSec + 1}, 400, "ops_per_sec"},
		{"beyond int64", "PUT", path, adminToken, `{"ops_per_sec": 1e30}`, 400, "ops_per_sec"},
		{"not a number", "PUT", path, adminToken, `{"max_connections": "many"}`, 400, "max_connections"},
		{"fraction", "PUT", path, adminToken, `{"max_connections": 1.5}`, 400, "max_connections"},
		{"unknown field", "PUT", path, adminToken, `{"max_conns": 5}`, 400, "max_conns"},
		{"unknown tenant PUT", "PUT", "/v1/admin/tenants/nobody/limits", adminToken, map[string]int64{"max_connections": 5}, 404, "nobody"},
		{"unknown tenant GET", "GET", "/v1/admin/tenants/nobody/limits", adminToken, nil, 404, "nobody"},
		{"impossible name", "GET", "/v1/admin/tenants/NO%20PE/limits", adminToken, nil, 404, "no tenant"},
		{"tenant token on admin", "PUT", path, acme.Token, map[string]int64{"max_connections": 5}, 403, "admin"},
		{"no token", "GET", "/v1/limits", "", nil, 401, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.method, tc.path, tc.token, tc.body)
			r.want(t, tc.status)
			if msg := r.errorText(t); !strings.Contains(msg, tc.text) {
				t.Errorf("error: got %q, want it to mention %q", msg, tc.text)
			}
		})
	}
	if d := diffKeys(before, h.snapshot()); len(d) > 0 {
		t.Errorf("bad calls changed metadb keys %v", d)
	}
}

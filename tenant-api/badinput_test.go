package tenantapi_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// TestBadInputChangesNothing sends every kind of bad call and checks that
// each gets its 4xx with a JSON {"error":…} naming the problem, and that
// metadb is byte for byte what it was before the call.
func TestBadInputChangesNothing(t *testing.T) {
	h := newHarness(t, func(c *tenantapi.Config) { c.MaxDBsPerTenant = 1 })

	// A registered 64M pair, and alpha holding one db on it.
	regM, regR := startPair(t, "2gb", 16)
	h.addPair("64M", regM, regR, "0-15")
	alpha := h.signup("alpha")
	bravo := h.signup("bravo")
	rep := h.do("POST", "/v1/dbs", alpha.Token, map[string]string{"size": "64M"})
	rep.want(t, http.StatusCreated)
	var alphaDB dbReply
	rep.decode(t, &alphaDB)
	// A 128M pool of one slot, which charlie holds.
	oneM, oneR := startPair(t, "2gb", 16)
	h.addPair("128M", oneM, oneR, "0")
	charlie := h.signup("charlie")
	h.do("POST", "/v1/dbs", charlie.Token, map[string]string{"size": "128M"}).want(t, http.StatusCreated)

	// Candidates that fail the checks: a pair with databases 16 and a key in
	// db 3, a pair with a tiny maxmemory, and a lone master.
	fullM, fullR := startPair(t, "2gb", 16)
	if err := fullM.ClientDB(t, 3).Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	smallM, smallR := startPair(t, "10mb", 16)
	lone := redistest.Start(t, "maxmemory", "2gb", "databases", "16")
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	nobody := "127.0.0.1:" + strconv.Itoa(port)

	pair := func(m, r, dbs string) map[string]string {
		return map[string]string{"master": m, "replica": r, "dbs": dbs}
	}
	bigBody := `{"size":"` + strings.Repeat("a", 10<<20) + `"}`
	const (
		tenantPath = "/v1/dbs"
		pairsPath  = "/v1/admin/pools/64M/pairs"
	)
	cases := []struct {
		name    string
		req     request
		status  int
		errText string // a part of the error message
	}{
		{"unknown size", request{method: "POST", path: tenantPath, token: alpha.Token, body: `{"size":"65M"}`}, 400, `"65M": use one of 32M 64M 128M 256M 512M 1G`},
		{"size of wrong type", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":64}`}, 400, `"size"`},
		{"missing size", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{}`}, 400, "use one of"},
		{"bad write mode", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"64M","write_mode":"fast"}`}, 400, "write_mode"},
		{"pool without pairs", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"32M"}`}, 409,
			"no free 32M db: the 32M pool has no servers yet; try another size or ask the operator to add capacity"},
		{"full pool", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"128M"}`}, 409,
			"no free 128M db: the 128M pool is full; try another size or ask the operator to add capacity"},
		{"tenant db limit", request{method: "POST", path: tenantPath, token: alpha.Token, body: `{"size":"64M"}`}, 409, "at most 1 dbs"},
		{"missing token", request{method: "POST", path: tenantPath, body: `{"size":"64M"}`}, 401, "Authorization"},
		{"not a bearer token", request{method: "GET", path: tenantPath, auth: "Basic " + alpha.Token}, 401, "malformed"},
		{"empty bearer token", request{method: "GET", path: tenantPath, auth: "Bearer "}, 401, "malformed"},
		{"wrong token", request{method: "POST", path: tenantPath, token: "gt_nope", body: `{"size":"64M"}`}, 401, "invalid token"},
		{"wrong admin token", request{method: "GET", path: "/v1/admin/pools", token: "not-the-admin"}, 401, "invalid token"},
		{"no token on admin route", request{method: "GET", path: "/v1/admin/pools"}, 401, "Authorization"},
		{"tenant token on admin list", request{method: "GET", path: "/v1/admin/pools", token: alpha.Token}, 403, "admin token required"},
		{"tenant token on add pair", request{method: "POST", path: pairsPath, token: alpha.Token, body: pair(fullM.Addr, fullR.Addr, "0-15")}, 403, "admin token required"},
		{"admin token on create", request{method: "POST", path: tenantPath, token: adminToken, body: `{"size":"64M"}`}, 401, "admin token cannot act as a tenant"},
		{"admin token on list", request{method: "GET", path: tenantPath, token: adminToken}, 401, "admin token"},
		{"other tenant's db get", request{method: "GET", path: "/v1/dbs/0", token: bravo.Token}, 404, "no db 0"},
		{"other tenant's db patch", request{method: "PATCH", path: "/v1/dbs/0", token: bravo.Token, body: `{"write_mode":"async"}`}, 404, "no db 0"},
		{"other tenant's db resize", request{method: "PATCH", path: "/v1/dbs/0", token: bravo.Token, body: `{"size":"128M"}`}, 404, "no db 0"},
		{"other tenant's db delete", request{method: "DELETE", path: "/v1/dbs/0", token: bravo.Token}, 404, "no db 0"},
		{"other tenant's job", request{method: "GET", path: "/v1/jobs/" + alphaDB.Job, token: bravo.Token}, 404, "no job"},
		{"missing job", request{method: "GET", path: "/v1/jobs/j-nope", token: alpha.Token}, 404, "no job"},
		{"drop while creating", request{method: "DELETE", path: "/v1/dbs/0", token: alpha.Token}, 409, "cannot be dropped now"},
		{"malformed json", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":`}, 400, "malformed JSON"},
		{"not json", request{method: "POST", path: tenantPath, token: bravo.Token, body: `size=64M`}, 400, "malformed JSON"},
		{"empty body", request{method: "POST", path: tenantPath, token: bravo.Token, body: ``}, 400, "empty"},
		{"json array", request{method: "POST", path: tenantPath, token: bravo.Token, body: `["64M"]`}, 400, "JSON object"},
		{"unknown field", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"64M","colour":"red"}`}, 400, `unknown field "colour"`},
		{"trailing garbage", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"64M"} x`}, 400, "nothing after it"},
		{"two objects", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"64M"}{"size":"64M"}`}, 400, "nothing after it"},
		{"10 MB body", request{method: "POST", path: tenantPath, token: bravo.Token, body: bigBody}, 413, "larger than 1048576 bytes"},
		{"wrong content type", request{method: "POST", path: tenantPath, token: bravo.Token, body: `{"size":"64M"}`, contentType: "text/plain"}, 415, "application/json"},
		{"index -1", request{method: "GET", path: "/v1/dbs/-1", token: alpha.Token}, 400, "bad db index"},
		{"index abc", request{method: "GET", path: "/v1/dbs/abc", token: alpha.Token}, 400, "bad db index"},
		{"index too long", request{method: "DELETE", path: "/v1/dbs/99999999999", token: alpha.Token}, 400, "bad db index"},
		{"patch index -1", request{method: "PATCH", path: "/v1/dbs/-1", token: alpha.Token, body: `{"write_mode":"async"}`}, 400, "bad db index"},
		{"delete index abc", request{method: "DELETE", path: "/v1/dbs/abc", token: alpha.Token}, 400, "bad db index"},
		{"missing db", request{method: "GET", path: "/v1/dbs/7", token: alpha.Token}, 404, "no db 7"},
		{"empty patch", request{method: "PATCH", path: "/v1/dbs/0", token: alpha.Token, body: `{}`}, 400, "empty patch"},
		{"patch bad size", request{method: "PATCH", path: "/v1/dbs/0", token: alpha.Token, body: `{"size":"65M"}`}, 400, "use one of"},
		{"patch bad write mode", request{method: "PATCH", path: "/v1/dbs/0", token: alpha.Token, body: `{"write_mode":""}`}, 400, "write_mode"},
		{"resize of a db not active", request{method: "PATCH", path: "/v1/dbs/0", token: alpha.Token, body: `{"size":"256M"}`}, 409, "wait for its job to finish before resizing"},
		{"tenant name too short", request{method: "POST", path: "/v1/tenants", body: `{"name":"ab"}`}, 400, "bad tenant name"},
		{"tenant name upper case", request{method: "POST", path: "/v1/tenants", body: `{"name":"Acme"}`}, 400, "bad tenant name"},
		{"tenant name starts with digit", request{method: "POST", path: "/v1/tenants", body: `{"name":"1acme"}`}, 400, "bad tenant name"},
		{"tenant name ends with dash", request{method: "POST", path: "/v1/tenants", body: `{"name":"acme-"}`}, 400, "bad tenant name"},
		{"tenant name underscore", request{method: "POST", path: "/v1/tenants", body: `{"name":"ac_me"}`}, 400, "bad tenant name"},
		{"tenant name too long", request{method: "POST", path: "/v1/tenants", body: `{"name":"a` + strings.Repeat("b", 32) + `"}`}, 400, "bad tenant name"},
		{"tenant name missing", request{method: "POST", path: "/v1/tenants", body: `{}`}, 400, "bad tenant name"},
		{"tenant name with newline", request{method: "POST", path: "/v1/tenants", body: `{"name":"acme\n"}`}, 400, "bad tenant name"},
		{"duplicate tenant", request{method: "POST", path: "/v1/tenants", body: `{"name":"alpha"}`}, 409, "taken"},
		{"pair replica not following", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, lone.Addr, "0-15")}, 422, "does not follow"},
		{"pair maxmemory too small", request{method: "POST", path: pairsPath, token: adminToken, body: pair(smallM.Addr, smallR.Addr, "0-15")}, 422, "maxmemory"},
		{"pair db not empty", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, fullR.Addr, "0-15")}, 422, "db 3 on " + fullM.Addr + " is not empty"},
		{"pair dbs beyond databases", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, fullR.Addr, "4-31")}, 422, "databases 16"},
		{"pair already registered", request{method: "POST", path: pairsPath, token: adminToken, body: pair(regM.Addr, regR.Addr, "0-15")}, 409, "already registered"},
		{"pair half registered", request{method: "POST", path: pairsPath, token: adminToken, body: pair(lone.Addr, regR.Addr, "0-15")}, 409, "already registered"},
		{"pair server down", request{method: "POST", path: pairsPath, token: adminToken, body: pair(nobody, lone.Addr, "0-15")}, 422, "does not answer"},
		{"pair same address twice", request{method: "POST", path: pairsPath, token: adminToken, body: pair(lone.Addr, lone.Addr, "0-15")}, 422, "same address"},
		{"pair persistence not what the servers run", request{method: "POST", path: pairsPath, token: adminToken,
			body: map[string]string{"master": fullM.Addr, "replica": fullR.Addr, "dbs": "4-15", "persistence": "aof-always"}}, 422, "replica " + fullR.Addr + " runs with persistence none"},
		{"pair unknown persistence", request{method: "POST", path: pairsPath, token: adminToken,
			body: map[string]string{"master": fullM.Addr, "replica": fullR.Addr, "dbs": "4-15", "persistence": "rdb"}}, 400, `bad persistence policy "rdb": want one of none, aof-everysec, aof-always`},
		{"pair bad size", request{method: "POST", path: "/v1/admin/pools/65M/pairs", token: adminToken, body: pair(fullM.Addr, fullR.Addr, "4-15")}, 400, "use one of"},
		{"pair bad address", request{method: "POST", path: pairsPath, token: adminToken, body: pair("nohost", fullR.Addr, "4-15")}, 400, "bad master address"},
		{"pair port zero", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, "127.0.0.1:0", "4-15")}, 400, "port must be 1-65535"},
		{"pair port too big", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, "127.0.0.1:65536", "4-15")}, 400, "port must be 1-65535"},
		{"pair dbs backwards", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, fullR.Addr, "15-4")}, 400, "backwards"},
		{"pair dbs empty", request{method: "POST", path: pairsPath, token: adminToken, body: pair(fullM.Addr, fullR.Addr, "")}, 400, "bad db list"},
		{"pair unknown field", request{method: "POST", path: pairsPath, token: adminToken, body: `{"master":"a:1","replica":"b:2","dbs":"0","size":"64M"}`}, 400, `unknown field "size"`},
		{"spare registered", request{method: "POST", path: "/v1/admin/spares", token: adminToken, body: `{"addr":"` + regR.Addr + `"}`}, 409, "already registered"},
		{"spare is a replica", request{method: "POST", path: "/v1/admin/spares", token: adminToken, body: `{"addr":"` + smallR.Addr + `"}`}, 422, "not a master"},
		{"spare not empty", request{method: "POST", path: "/v1/admin/spares", token: adminToken, body: `{"addr":"` + fullM.Addr + `"}`}, 422, "not empty"},
		{"spare down", request{method: "POST", path: "/v1/admin/spares", token: adminToken, body: `{"addr":"` + nobody + `"}`}, 422, "does not answer"},
		{"spare bad address", request{method: "POST", path: "/v1/admin/spares", token: adminToken, body: `{"addr":"x"}`}, 400, "bad spare address"},
		{"unknown route", request{method: "GET", path: "/v1/nothing", token: alpha.Token}, 404, "no route"},
		{"wrong method", request{method: "PUT", path: tenantPath, token: alpha.Token, body: `{}`}, 405, "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.snapshot()
			rep := h.send(tc.req)
			if rep.status != tc.status {
				t.Fatalf("status: got %v, want %v (body %.300s)", rep.status, tc.status, rep.body)
			}
			if ct := rep.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type: got %q, want application/json", ct)
			}
			if got := rep.errorText(t); !strings.Contains(got, tc.errText) {
				t.Errorf("error: got %q, want it to contain %q", got, tc.errText)
			}
			if rep.status == http.StatusUnauthorized && !strings.HasPrefix(rep.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate: got %q, want Bearer", rep.header.Get("WWW-Authenticate"))
			}
			if changed := diffKeys(before, h.snapshot()); len(changed) > 0 {
				t.Errorf("metadb keys changed: got %v, want none", changed)
			}
		})
	}
}

package tenantapi_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

type auditPageReply struct {
	Entries []metadb.AuditEntry `json:"entries"`
	Next    string              `json:"next"`
}

// auditAll is every entry of the stream, newest first, through the store.
func (h *harness) auditAll() []metadb.AuditEntry {
	h.t.Helper()
	got, _, err := h.store.AuditLog(h.t.Context(), metadb.AuditQuery{Limit: 10000})
	if err != nil {
		h.t.Fatal(err)
	}
	return got
}

// TestAuditRESTActions: every state-changing call, accepted or refused,
// and every refused admin credential leaves exactly one entry with the
// right fields; reads leave none; no entry holds a secret.
func TestAuditRESTActions(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 4)
	bm, br := startPair(t, "2gb", 4)
	spare := redistest.Start(t)
	var acme signupReply
	var pairID string
	var created dbReply
	secrets := []string{adminToken, "not-the-admin-token", "gt_forged"}

	for _, tc := range []struct {
		name string
		do   func(t *testing.T)
		want metadb.AuditEntry
	}{
		{"pair add", func(t *testing.T) { pairID = h.addPair("64M", m, r, "0-3").ID },
			metadb.AuditEntry{Actor: "admin", Action: metadb.AuditPairAdd, Result: "ok"}},
		{"pair add refused", func(t *testing.T) {
			h.do("POST", "/v1/admin/pools/64M/pairs", adminToken, map[string]string{"master": m.Addr, "replica": r.Addr, "dbs": "0-3"}).
				want(t, http.StatusConflict)
		}, metadb.AuditEntry{Actor: "admin", Action: metadb.AuditPairAdd, Target: "pool 64M",
			Result: "error: " + m.Addr + " is already registered (pair p1 master)"}},
		{"spare add", func(t *testing.T) {
			h.do("POST", "/v1/admin/spares", adminToken, map[string]string{"addr": spare.Addr}).want(t, http.StatusCreated)
		}, metadb.AuditEntry{Actor: "admin", Action: metadb.AuditSpareAdd, Target: spare.Addr, Result: "ok"}},
		{"signup", func(t *testing.T) { acme = h.signup("acme"); secrets = append(secrets, acme.Token, acme.Password) },
			metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditTenantSignup, Target: "acme", Tenant: "acme", Result: "ok"}},
		{"tenant limits", func(t *testing.T) {
			h.do("PUT", "/v1/admin/tenants/acme/limits", adminToken, map[string]int{"max_connections": 5}).want(t, http.StatusOK)
		}, metadb.AuditEntry{Actor: "admin", Action: metadb.AuditTenantLimits, Target: "acme", Tenant: "acme", Result: "ok"}},
		{"tenant limits refused", func(t *testing.T) {
			h.do("PUT", "/v1/admin/tenants/acme/limits", adminToken, map[string]int{"max_connections": -1}).want(t, http.StatusBadRequest)
		}, metadb.AuditEntry{Actor: "admin", Action: metadb.AuditTenantLimits, Target: "acme", Tenant: "acme",
			Result: "error: bad limits: max_connections must be between 0 (the default) and 1000000, is -1"}},
		{"db create", func(t *testing.T) {
			h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
			finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBCreate, Target: "acme/0", Tenant: "acme", Result: "ok"}},
		{"db create refused", func(t *testing.T) {
			h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "1G"}).want(t, http.StatusConflict)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBCreate, Target: "acme", Tenant: "acme",
			Result: "error: no free 1G db: the 1G pool has no servers yet; try another size or ask the operator to add capacity"}},
		{"db mode", func(t *testing.T) {
			h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"write_mode": "async"}).want(t, http.StatusOK)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBMode, Target: "acme/0", Tenant: "acme", Result: "ok"}},
		{"db restore refused", func(t *testing.T) {
			h.do("POST", "/v1/dbs/0/restore", acme.Token, map[string]string{"export": "x"}).want(t, http.StatusServiceUnavailable)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBRestore, Target: "acme/0", Tenant: "acme",
			Result: "error: restores are off: this API server has no object store (--store)"}},
		{"db resize refused", func(t *testing.T) {
			h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "256M"}).want(t, http.StatusConflict)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBResize, Target: "acme/0", Tenant: "acme",
			Result: "error: no free 256M db to resize into: the pool is full; try another size or ask the operator to add capacity"}},
		{"pair add 256M", func(t *testing.T) { h.addPair("256M", bm, br, "0-3") },
			metadb.AuditEntry{Actor: "admin", Action: metadb.AuditPairAdd, Target: "p2", Result: "ok"}},
		{"db resize", func(t *testing.T) {
			h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": "256M"}).want(t, http.StatusAccepted)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBResize, Target: "acme/0", Tenant: "acme", Result: "ok"}},
		{"db drop refused", func(t *testing.T) {
			h.do("DELETE", "/v1/dbs/0", acme.Token, nil).want(t, http.StatusConflict)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBDrop, Target: "acme/0", Tenant: "acme",
			Result: "error: db 0 cannot be dropped now (db 0 is resizing: bad state for this operation): wait for its job to finish"}},
		{"db drop", func(t *testing.T) {
			var db1 dbReply
			h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &db1)
			finishCreate(t, h.store, "acme", 1, db1.Job, "127.0.0.1:7379")
			if n := len(h.auditAll()); n == 0 {
				t.Fatal("no entry for the create")
			}
			h.do("DELETE", "/v1/dbs/1", acme.Token, nil).want(t, http.StatusAccepted)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditDBDrop, Target: "acme/1", Tenant: "acme", Result: "ok"}},
		{"admin route without a token", func(t *testing.T) {
			h.do("GET", "/v1/admin/pools", "", nil).want(t, http.StatusUnauthorized)
		}, metadb.AuditEntry{Actor: "anonymous", Action: metadb.AuditAdminAuthFailed,
			Result: "error: missing Authorization header: send Authorization: Bearer <token>"}},
		{"admin route with a bad token", func(t *testing.T) {
			h.do("POST", "/v1/admin/spares", "not-the-admin-token", map[string]string{"addr": spare.Addr}).want(t, http.StatusUnauthorized)
		}, metadb.AuditEntry{Actor: "anonymous", Action: metadb.AuditAdminAuthFailed, Result: "error: invalid token"}},
		{"admin route with a malformed header", func(t *testing.T) {
			h.send(request{method: "GET", path: "/v1/admin/jobs", auth: "Basic gt_forged"}).want(t, http.StatusUnauthorized)
		}, metadb.AuditEntry{Actor: "anonymous", Action: metadb.AuditAdminAuthFailed,
			Result: "error: malformed Authorization header: send Authorization: Bearer <token>"}},
		{"admin route with a tenant token", func(t *testing.T) {
			h.do("GET", "/v1/admin/audit", acme.Token, nil).want(t, http.StatusForbidden)
		}, metadb.AuditEntry{Actor: "tenant:acme", Action: metadb.AuditAdminAuthFailed, Tenant: "acme", Result: "error: admin token required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.auditAll())
			tc.do(t)
			all := h.auditAll()
			if tc.name == "db drop" {
				before++ // the create made on the way
			}
			if len(all) != before+1 {
				t.Fatalf("%d new entries, want 1: %+v", len(all)-before, all[:len(all)-before])
			}
			got := all[0]
			if got.RequestID == "" || got.ID == "" || got.Time == "" {
				t.Errorf("entry %+v: want id, time and request id", got)
			}
			want := tc.want
			want.ID, want.Time, want.RequestID = got.ID, got.Time, got.RequestID
			switch {
			case want.Action == metadb.AuditAdminAuthFailed:
				want.Target = got.Target
				if !strings.HasPrefix(got.Target, "127.0.0.1:") {
					t.Errorf("target %q, want the remote address", got.Target)
				}
			case want.Action == metadb.AuditPairAdd && want.Target == "":
				want.Target = pairID
			}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}

	// Reads record nothing.
	before := len(h.auditAll())
	h.do("GET", "/v1/dbs", acme.Token, nil).want(t, http.StatusOK)
	h.do("GET", "/v1/admin/pools", adminToken, nil).want(t, http.StatusOK)
	h.do("GET", "/v1/audit", acme.Token, nil).want(t, http.StatusOK)
	if n := len(h.auditAll()); n != before {
		t.Fatalf("reads added %d entries", n-before)
	}

	// No field of any entry holds a secret or a secret's hash.
	msgs, err := h.store.Client().XRange(t.Context(), metadb.AuditKey(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range msgs {
		for k, v := range msg.Values {
			for _, secret := range secrets {
				for _, s := range []string{secret, metadb.HashSecret(secret)} {
					if strings.Contains(k, s) || strings.Contains(v.(string), s) {
						t.Errorf("entry %s field %s=%q holds a secret", msg.ID, k, v)
					}
				}
			}
		}
	}
}

// TestAuditRoutes: a tenant sees only its own entries, the admin every
// entry or one tenant's; REST pages return each entry once; bad filters
// are 400.
func TestAuditRoutes(t *testing.T) {
	h := newHarness(t, nil)
	acme, zeta := h.signup("acme"), h.signup("zeta")
	for range 3 {
		h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).want(t, http.StatusConflict)
		h.do("POST", "/v1/dbs", zeta.Token, map[string]string{"size": "64M"}).want(t, http.StatusConflict)
	}
	h.do("GET", "/v1/admin/pools", zeta.Token, nil).want(t, http.StatusForbidden)

	page := func(path, token string) auditPageReply {
		t.Helper()
		rep := h.do("GET", path, token, nil)
		rep.want(t, http.StatusOK)
		var p auditPageReply
		rep.decode(t, &p)
		return p
	}
	for _, tc := range []struct {
		name, path, token, tenant string
		n                         int
	}{
		{"acme's own", "/v1/audit", acme.Token, "acme", 4},
		{"zeta's own, admin failure included", "/v1/audit", zeta.Token, "zeta", 5},
		{"admin, one tenant", "/v1/admin/audit?tenant=zeta", adminToken, "zeta", 5},
		{"admin, all", "/v1/admin/audit", adminToken, "", 9},
		{"admin, one action", "/v1/admin/audit?action=auth.admin_failed", adminToken, "zeta", 1},
		{"since the future", "/v1/audit?since=2999-01-01T00:00:00Z", acme.Token, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			path := tc.path
			for pages := 0; pages < 20; pages++ {
				sep := "?"
				if strings.Contains(path, "?") {
					sep = "&"
				}
				p := page(path+sep+"limit=2", tc.token)
				if len(p.Entries) > 2 {
					t.Fatalf("page of %d entries, limit 2", len(p.Entries))
				}
				for _, e := range p.Entries {
					if seen[e.ID] {
						t.Fatalf("entry %s twice", e.ID)
					}
					seen[e.ID] = true
					if tc.tenant != "" && e.Tenant != tc.tenant {
						t.Fatalf("entry of tenant %q in %s", e.Tenant, tc.name)
					}
				}
				if p.Next == "" {
					break
				}
				path = tc.path
				if strings.Contains(path, "?") {
					path += "&cursor=" + url.QueryEscape(p.Next)
				} else {
					path += "?cursor=" + url.QueryEscape(p.Next)
				}
			}
			if len(seen) != tc.n {
				t.Fatalf("got %d entries, want %d", len(seen), tc.n)
			}
		})
	}
	if p := page("/v1/audit", acme.Token); len(p.Entries) != 4 || p.Next != "" {
		t.Fatalf("default page: %d entries, next %q", len(p.Entries), p.Next)
	}

	for _, q := range []string{
		"limit=0", "limit=1001", "limit=x", "limit=1&limit=2", "since=yesterday", "action=db.nope",
		"cursor=abc", "cursor=1-2-3", "cursor=99999999999999999999-0", "tenant=acme", "color=red",
	} {
		rep := h.do("GET", "/v1/audit?"+q, acme.Token, nil)
		rep.want(t, http.StatusBadRequest)
		rep.errorText(t)
	}
	for _, q := range []string{"tenant=A!", "tenant=", "limit=-1"} {
		rep := h.do("GET", "/v1/admin/audit?"+q, adminToken, nil)
		rep.want(t, http.StatusBadRequest)
		rep.errorText(t)
	}
	h.do("GET", "/v1/audit", "", nil).want(t, http.StatusUnauthorized)

	// A client's X-Request-Id is the entry's request id.
	req, err := http.NewRequest("POST", h.srv.URL+"/v1/dbs", strings.NewReader(`{"size":"64M"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+acme.Token)
	req.Header.Set("X-Request-Id", "req-from-client-42")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := page("/v1/audit?limit=1", acme.Token); len(p.Entries) != 1 || p.Entries[0].RequestID != "req-from-client-42" {
		t.Fatalf("newest entry %+v, want request id req-from-client-42", p.Entries)
	}
	for _, q := range []string{"cursor=0-0", "cursor=18446744073709551615-18446744073709551615", "since=0001-01-01T00:00:00Z"} {
		h.do("GET", "/v1/audit?"+q, acme.Token, nil).want(t, http.StatusOK)
	}
}

// FuzzAuditQuery sends arbitrary query strings to GET /v1/admin/audit: the
// answer is a page (200) or a 400, and either matches the OpenAPI document.
func FuzzAuditQuery(f *testing.F) {
	h := newHarness(f, nil)
	h.signup("acme")
	handler := h.api.Handler()
	routes := handler.(chi.Routes)
	doc := loadDoc(f)
	for _, seed := range []string{
		"", "limit=1", "limit=1000", "limit=1001", "tenant=acme&action=tenant.signup", "since=2026-01-01T00:00:00Z",
		"cursor=0-0", "cursor=1-1", "cursor=18446744073709551615-18446744073709551615", "cursor=%28", "limit=1&limit=1",
		"%zz", ";", "tenant=%00", "since=2026-01-01T00:00:00.123456789+05:30",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		req := httptest.NewRequest("GET", "/v1/admin/audit", nil)
		req.URL.RawQuery = query
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("query %q: status %d, want 200 or 400 (body %s)", query, rec.Code, rec.Body.Bytes())
		}
		if err := doc.checkResponse(routes, "GET", "/v1/admin/audit", rec.Code, rec.Header(), rec.Body.Bytes()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAuditRefusalFlood: a flood of bad admin tokens from one address, or
// of refused calls by one tenant, records only that key's share, so junk
// cannot push the real entries out of the capped stream.
func TestAuditRefusalFlood(t *testing.T) {
	h := newHarness(t, nil)
	acme := h.signup("acme")
	for i := 0; i < 30; i++ {
		h.do("GET", "/v1/admin/pools", "gt_forged", nil).want(t, http.StatusUnauthorized)
		h.do("DELETE", "/v1/dbs/7", acme.Token, nil).want(t, http.StatusNotFound)
	}
	count := map[string]int{}
	for _, e := range h.auditAll() {
		count[e.Action]++
	}
	if n := count[metadb.AuditAdminAuthFailed]; n < 1 || n > 10 {
		t.Errorf("30 refused admin credentials from one address left %d entries, want 1 to 10", n)
	}
	if n := count[metadb.AuditDBDrop]; n < 1 || n > 10 {
		t.Errorf("30 refused drops by one tenant left %d entries, want 1 to 10", n)
	}
	if count[metadb.AuditTenantSignup] != 1 {
		t.Errorf("the signup's entry: got %d, want 1", count[metadb.AuditTenantSignup])
	}
}

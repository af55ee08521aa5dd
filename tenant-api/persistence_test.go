package tenantapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestAddPairPersistence: a pair declared aof-everysec whose servers run
// appendonly yes with appendfsync everysec joins with its policy shown;
// declared aof-always, it is refused with what the servers run.
func TestAddPairPersistence(t *testing.T) {
	h := newHarness(t, nil)
	m, r := redistest.StartPair(t, "maxmemory", "2gb", "databases", "16", "appendonly", "yes", "appendfsync", "everysec")
	body := map[string]string{"master": m.Addr, "replica": r.Addr, "dbs": "0-3", "persistence": "aof-always"}
	rep := h.do("POST", "/v1/admin/pools/64M/pairs", adminToken, body)
	if rep.status != http.StatusUnprocessableEntity {
		t.Fatalf("aof-always on everysec servers: %d %s, want 422", rep.status, rep.body)
	}
	if got, want := rep.errorText(t), "replica "+r.Addr+" runs with persistence aof-everysec (appendonly yes, appendfsync everysec), not aof-always"; !strings.Contains(got, want) {
		t.Fatalf("refusal %q, want it to name %q", got, want)
	}
	body["persistence"] = "aof-everysec"
	rep = h.do("POST", "/v1/admin/pools/64M/pairs", adminToken, body)
	if rep.status != http.StatusCreated {
		t.Fatalf("aof-everysec: %d %s, want 201", rep.status, rep.body)
	}
	var p pairReply
	rep.decode(t, &p)
	if p.Persistence != "aof-everysec" {
		t.Fatalf("pair shows persistence %q, want aof-everysec", p.Persistence)
	}
}

// TestDBViewWriteDegraded: while the db's pair has its writes degraded,
// the tenant's views of a confirmed db say so, with a warning; an async
// db is not marked (its writes never waited for a replica).
func TestDBViewWriteDegraded(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "2gb", 16)
	pair := h.addPair("64M", m, r, "0-3")
	acme := h.signup("acme")
	var created dbReply
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"}).decode(t, &created)
	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")
	if _, err := h.store.UpdatePair(t.Context(), nil, pair.ID, func(p *metadb.Pair) error {
		p.Replica, p.WritesDegraded = "", true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var one dbReply
	h.do("GET", "/v1/dbs/0", acme.Token, nil).decode(t, &one)
	if !one.WriteDegraded || !strings.Contains(one.Warning, "writes degraded") {
		t.Fatalf("GET: write_degraded %v, warning %q; want degraded with a warning", one.WriteDegraded, one.Warning)
	}
	var list []dbReply
	h.do("GET", "/v1/dbs", acme.Token, nil).decode(t, &list)
	if len(list) != 1 || !list[0].WriteDegraded {
		t.Fatalf("list: %+v, want the db degraded", list)
	}
	h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"write_mode": "async"}).want(t, http.StatusOK)
	one = dbReply{}
	h.do("GET", "/v1/dbs/0", acme.Token, nil).decode(t, &one)
	if one.WriteDegraded || one.Warning != "" {
		t.Fatalf("async db: write_degraded %v, warning %q; want neither", one.WriteDegraded, one.Warning)
	}
}

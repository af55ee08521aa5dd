package tenantapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/granary-db/granary/internal/redistest"
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
	if got, want := rep.errorText(t), "runs with persistence aof-everysec (appendonly yes, appendfsync everysec), not aof-always"; !strings.Contains(got, want) {
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

package tenantapi_test

import (
	"context"
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// TestQuotaMetrics checks that /metrics shows each db's share of its quota
// and counts the dbs at 80 % or more and the banned ones.
func TestQuotaMetrics(t *testing.T) {
	h := newHarness(t, nil)
	m, r := startPair(t, "1gb", 4)
	h.addPair("64M", m, r, "0-3")
	tok := h.signup("acme").Token
	for i := 0; i < 2; i++ {
		h.do("POST", "/v1/dbs", tok, map[string]string{"size": "64M"}).want(t, 201)
	}
	ctx := context.Background()
	set := func(index int, used int64, banned bool) {
		_, err := h.store.UpdateDB(ctx, nil, "test", "acme", index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
			db.UsedBytes, db.Banned = used, banned
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	set(0, 60<<20, false) // 94 %
	set(1, 70<<20, true)  // over, banned
	body := string(h.do("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`granary_db_quota_used_ratio{index="0",size="64M",tenant="acme"} 0.9375`,
		"granary_dbs_quota_warning 2",
		"granary_dbs_write_banned 1",
	} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q", want)
		}
	}
}

package proxy

import (
	"fmt"
	"testing"

	"github.com/granary-db/granary/metadb"
)

// TestUsageReport: the lease record carries each db's commands and each
// tenant's connections, for the master's usage history.
func TestUsageReport(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db.Index)
	for i := range 5 {
		if err := c.Set(e.ctx, fmt.Sprint("k", i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	label := fmt.Sprintf("acme/%d", db.Index)
	e.waitFor("the report", func() bool {
		ms, err := e.store.LiveMembers(e.ctx, metadb.KindProxy)
		if err != nil || len(ms) != 1 {
			return false
		}
		return ms[0].DBOps[label] >= 5 && ms[0].TenantConns["acme"] >= 1 && !ms[0].Reported.IsZero()
	})
}

package proxy

import (
	"testing"

	"github.com/granary-db/granary/metadb"
)

// TestBasicRoundTrip: a tenant authenticates with a redis:// URL, writes and
// reads through the proxy, and the data lands in its slot on the master
// and, once confirmed, on the replica.
func TestBasicRoundTrip(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	c := e.client("acme", pass, db.Index)
	if err := c.Ping(e.ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(e.ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(e.ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("get: got %q, %v; want v", got, err)
	}
	if got, _ := e.slot(db).Get(e.ctx, "k").Result(); got != "v" {
		t.Fatalf("slot on master: got %q, want v", got)
	}
	if got, _ := e.replica.ClientDB(t, db.SlotDB).Get(e.ctx, "k").Result(); got != "v" {
		t.Fatalf("slot on replica after confirmed write: got %q, want v", got)
	}
}

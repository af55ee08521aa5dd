package tenantapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	tenantapi "github.com/granary-db/granary/tenant-api"
)

// TestCapacityConcurrentCreates fires 200 concurrent creates from 20 tenants
// at a pool of exactly 32 slots: exactly 32 succeed, each on its own slot,
// and the other 168 are told the pool is full (invariant 4: one owner per
// slot).
func TestCapacityConcurrentCreates(t *testing.T) {
	const (
		tenants   = 20
		perTenant = 10
		slots     = 32
	)
	h := newHarness(t, func(c *tenantapi.Config) { c.CreateWait = 10 * time.Millisecond })
	m, r := startPair(t, "4gb", 32)
	p := h.addPair("64M", m, r, "0-31")
	if p.Free != slots {
		t.Fatalf("free slots: got %v, want %v", p.Free, slots)
	}
	tokens := make([]string, tenants)
	for i := range tokens {
		tokens[i] = h.signup(fmt.Sprintf("tenant-%02d", i)).Token
	}

	type result struct {
		status int
		db     dbReply
		err    string
	}
	results := make(chan result, tenants*perTenant)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < tenants*perTenant; i++ {
		wg.Add(1)
		go func(token string) {
			defer wg.Done()
			<-start
			rq, err := http.NewRequest("POST", h.srv.URL+"/v1/dbs", strings.NewReader(`{"size":"64M"}`))
			if err != nil {
				results <- result{err: err.Error()}
				return
			}
			rq.Header.Set("Authorization", "Bearer "+token)
			resp, err := h.client.Do(rq)
			if err != nil {
				results <- result{err: err.Error()}
				return
			}
			defer resp.Body.Close()
			res := result{status: resp.StatusCode}
			var body struct {
				dbReply
				Error string `json:"error"`
			}
			if err := jsonDecode(resp.Body, &body); err != nil {
				res.err = err.Error()
			}
			res.db = body.dbReply
			if body.Error != "" {
				res.err = body.Error
			}
			results <- res
		}(tokens[i%tenants])
	}
	close(start)
	wg.Wait()
	close(results)

	created := map[slotReply]bool{}
	var full, other int
	for res := range results {
		switch {
		case res.status == http.StatusCreated:
			if created[res.db.Slot] {
				t.Errorf("slot %+v handed out twice", res.db.Slot)
			}
			created[res.db.Slot] = true
		case res.status == http.StatusConflict && strings.Contains(res.err, "no free 64M db"):
			full++
		default:
			other++
			t.Errorf("unexpected answer: status %v, error %q", res.status, res.err)
		}
	}
	if len(created) != slots || full != tenants*perTenant-slots || other != 0 {
		t.Fatalf("answers: got %v created, %v full, %v other; want %v created, %v full, 0 other",
			len(created), full, other, slots, tenants*perTenant-slots)
	}

	ctx := context.Background()
	owners, err := h.store.SlotOwners(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != slots {
		t.Fatalf("slot owners: got %v, want %v", len(owners), slots)
	}
	seen := map[string]bool{}
	for slot, owner := range owners {
		if seen[owner] {
			t.Errorf("db %s owns two slots (second: %s)", owner, slot)
		}
		seen[owner] = true
	}
	total := 0
	for i := 0; i < tenants; i++ {
		dbs, err := h.store.DBs(ctx, fmt.Sprintf("tenant-%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		for _, db := range dbs {
			if !created[slotReply{Pair: db.Pair, DB: db.SlotDB}] {
				t.Errorf("db %s/%d on %s/%d was never answered 201", db.Tenant, db.Index, db.Pair, db.SlotDB)
			}
		}
		total += len(dbs)
	}
	if total != slots {
		t.Fatalf("tenant dbs in metadb: got %v, want %v", total, slots)
	}
	free, err := h.store.FreeSlots(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(free) != 0 {
		t.Fatalf("free slots left: got %v, want none", free)
	}
}

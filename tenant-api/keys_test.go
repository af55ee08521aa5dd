package tenantapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

type keysReply struct {
	Index     int        `json:"index"`
	State     string     `json:"state"`
	Requested *time.Time `json:"requested"`
	Scanned   int64      `json:"scanned"`
	Error     string     `json:"error"`
	Big       *struct {
		Started    time.Time `json:"started"`
		Finished   time.Time `json:"finished"`
		ElapsedMS  int64     `json:"elapsed_ms"`
		Complete   bool      `json:"complete"`
		Partial    string    `json:"partial"`
		Keys       int64     `json:"keys"`
		Scanned    int64     `json:"scanned"`
		Slot       slotReply `json:"slot"`
		ByBytes    []bigKey  `json:"by_bytes"`
		ByElements []bigKey  `json:"by_elements"`
	} `json:"big_keys"`
	Hot struct {
		Time          *time.Time `json:"time"`
		Proxies       int        `json:"proxies"`
		SampleEvery   int        `json:"sample_every"`
		WindowSeconds float64    `json:"window_seconds"`
		Keys          []struct {
			Key       string  `json:"key"`
			OpsPerSec float64 `json:"ops_per_sec"`
			Error     float64 `json:"error"`
		} `json:"keys"`
	} `json:"hot_keys"`
}

type bigKey struct {
	Key      string `json:"key"`
	Type     string `json:"type"`
	Bytes    int64  `json:"bytes"`
	Elements int64  `json:"elements"`
}

// TestKeyReportRoute: a request starts one scan, which a second request
// does not duplicate; the keeper's result and the proxies' merged hot keys
// show to the tenant and the admin; another tenant gets 404, and a tenant
// token on the admin route 403.
func TestKeyReportRoute(t *testing.T) {
	h := newHarness(t, func(c *tenantapi.Config) { c.KeyReportGap = time.Hour })
	acme, zeta := h.signup("acme"), h.signup("zeta")
	ctx := t.Context()
	pair, err := h.store.AddPair(ctx, "64M", "127.0.0.1:1", "127.0.0.1:2", []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	_, job, err := h.store.ClaimDB(ctx, "acme", pair, metadb.WriteConfirmed, 1000, 8, "create-acme")
	if err != nil {
		t.Fatal(err)
	}
	finishCreate(t, h.store, "acme", 0, job.ID, "127.0.0.1:7379")
	const path = "/v1/dbs/0/keys/report"

	var got keysReply
	h.do("GET", path, acme.Token, nil).decode(t, &got)
	if got.State != "none" || got.Big != nil || got.Requested != nil || len(got.Hot.Keys) != 0 {
		t.Fatalf("before any request: %+v", got)
	}
	r := h.do("POST", path, acme.Token, nil)
	r.want(t, http.StatusAccepted)
	r.decode(t, &got)
	if got.State != metadb.KeyReportPending || got.Requested == nil {
		t.Fatalf("after the request: %+v", got)
	}
	first := *got.Requested
	h.do("POST", path, acme.Token, nil).decode(t, &got)
	if !got.Requested.Equal(first) {
		t.Fatalf("a second request started another scan (requested %v, then %v)", first, got.Requested)
	}

	// The keeper's part.
	run, ok, err := h.store.ClaimKeyReport(ctx, "acme", 0, "k1", metadb.KeyReportStale)
	if err != nil || !ok {
		t.Fatalf("claim: %v %v", ok, err)
	}
	h.do("GET", path, acme.Token, nil).decode(t, &got)
	if got.State != metadb.KeyReportRunning {
		t.Fatalf("while running: %+v", got)
	}
	_, err = h.store.UpdateKeyReport(ctx, "acme", 0, "k1", run.Started, func(r *metadb.KeyReport) {
		r.State, r.Scanned = metadb.KeyReportDone, 3
		r.Last = &metadb.BigKeyReport{Pair: pair.ID, SlotDB: 0, Keeper: "k1", Started: run.Started, Finished: time.Now(),
			Keys: 3, Scanned: 3, Complete: true, Elapsed: 1500 * time.Millisecond,
			ByBytes:    []metadb.BigKey{{Key: "big", Type: "string", Bytes: 5000, Elements: 4900}},
			ByElements: []metadb.BigKey{{Key: "list", Type: "list", Bytes: 300, Elements: 100}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, p := range []struct {
		id   string
		keys []metadb.HotKey
	}{
		{"p1", []metadb.HotKey{{Key: "a", Rate: 10, RateError: 1}, {Key: "b", Rate: 8}}},
		{"p2", []metadb.HotKey{{Key: "b", Rate: 5}, {Key: "c", Rate: 1}}},
	} {
		err := h.store.PublishHotKeys(ctx, p.id, []metadb.HotKeys{{Tenant: "acme", Index: 0, Time: now, SampleEvery: 16,
			Window: time.Minute, Keys: p.keys}}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
	}
	h.do("GET", path, acme.Token, nil).decode(t, &got)
	if got.State != metadb.KeyReportDone || got.Big == nil || !got.Big.Complete || got.Big.ByBytes[0].Key != "big" ||
		got.Big.ByElements[0].Elements != 100 || got.Big.ElapsedMS != 1500 || got.Big.Slot.Pair != pair.ID {
		t.Fatalf("done: %+v", got)
	}
	hot := got.Hot
	if hot.Proxies != 2 || hot.SampleEvery != 16 || hot.WindowSeconds != 60 || len(hot.Keys) != 3 ||
		hot.Keys[0].Key != "b" || hot.Keys[0].OpsPerSec != 13 || hot.Keys[1].Key != "a" || hot.Keys[1].Error != 1 {
		t.Fatalf("hot keys: %+v", hot)
	}
	// Within the gap a request starts nothing.
	r = h.do("POST", path, acme.Token, nil)
	r.want(t, http.StatusAccepted)
	r.decode(t, &got)
	if got.State != metadb.KeyReportDone || !got.Requested.Equal(first) {
		t.Fatalf("a request within the gap: %+v", got)
	}

	// Isolation: zeta has no db 0.
	h.do("GET", path, zeta.Token, nil).want(t, http.StatusNotFound)
	h.do("POST", path, zeta.Token, nil).want(t, http.StatusNotFound)
	h.do("GET", path, "", nil).want(t, http.StatusUnauthorized)
	const admin = "/v1/admin/tenants/acme/dbs/0/keys/report"
	h.do("GET", admin, acme.Token, nil).want(t, http.StatusForbidden)
	h.do("GET", "/v1/admin/tenants/zeta/dbs/0/keys/report", adminToken, nil).want(t, http.StatusNotFound)
	var adm keysReply
	h.do("GET", admin, adminToken, nil).decode(t, &adm)
	if adm.Big == nil || adm.Big.ByBytes[0].Key != "big" || len(adm.Hot.Keys) != 3 {
		t.Fatalf("admin view: %+v", adm)
	}
	h.do("GET", "/v1/dbs/x/keys/report", acme.Token, nil).want(t, http.StatusBadRequest)
}

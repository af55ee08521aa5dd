package tenantapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

func TestConfigValidate(t *testing.T) {
	good := tenantapi.DefaultConfig()
	good.AdminToken = adminToken
	cases := []struct {
		name  string
		tweak func(c *tenantapi.Config)
		ok    bool
	}{
		{"defaults with a token", func(c *tenantapi.Config) {}, true},
		{"no admin token", func(c *tenantapi.Config) { c.AdminToken = "" }, false},
		{"no addr", func(c *tenantapi.Config) { c.Addr = "" }, false},
		{"addr without port", func(c *tenantapi.Config) { c.Addr = "localhost" }, false},
		{"negative create wait", func(c *tenantapi.Config) { c.CreateWait = -time.Second }, false},
		{"zero create wait", func(c *tenantapi.Config) { c.CreateWait = 0 }, true},
		{"no dbs per tenant", func(c *tenantapi.Config) { c.MaxDBsPerTenant = 0 }, false},
		{"no body", func(c *tenantapi.Config) { c.MaxBodyBytes = 0 }, false},
		{"no id", func(c *tenantapi.Config) { c.ID = "" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.tweak(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate: got %v, want ok %v", err, tc.ok)
			}
		})
	}
	if _, err := tenantapi.New(good, nil, zerolog.Nop()); err == nil {
		t.Fatal("New with a nil store: got nil error, want one")
	}
}

// TestServeHealthMetricsShutdown runs the real server on a port-0 listener:
// /healthz answers, /metrics counts requests by route pattern in the
// server's own registry, and cancelling the context stops Serve cleanly.
func TestServeHealthMetricsShutdown(t *testing.T) {
	meta := redistest.Start(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr + "/0"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	cfg := tenantapi.DefaultConfig()
	cfg.AdminToken = adminToken
	api, err := tenantapi.New(cfg, store, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- api.Serve(ctx, l) }()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || strings.TrimSpace(body) != `{"ok":true}` {
		t.Fatalf("healthz: got %v %s, want 200 {\"ok\":true}", code, body)
	}
	get("/v1/dbs/3") // 401, counted under its pattern
	get("/no/such/path")
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("metrics: got %v, want 200", code)
	}
	for _, want := range []string{
		`granary_api_requests_total{code="200",method="GET",route="/healthz"} 1`,
		`granary_api_requests_total{code="401",method="GET",route="/v1/dbs/{index}"} 1`,
		`granary_api_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`granary_api_request_duration_seconds_bucket{method="GET",route="/healthz",le="+Inf"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics: missing %s", want)
		}
	}

	meta.Kill()
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"ok":false`) {
		t.Fatalf("healthz with metadb down: got %v %s, want 503 ok:false", code, body)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: got %v, want nil after shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return within 15s of cancel")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

// TestAdminViews adds a spare and reads every operator listing.
func TestAdminViews(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	m, r := startPair(t, "2gb", 16)
	h.addPair("128M", m, r, "0-7")
	spare := redistest.Start(t)
	rep := h.do("POST", "/v1/admin/spares", adminToken, map[string]string{"addr": spare.Addr})
	rep.want(t, http.StatusCreated)
	if err := h.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px1", Addr: "127.0.0.1:7379"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	acme := h.signup("acme")
	h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "128M"}).want(t, http.StatusCreated)

	t.Run("pools", func(t *testing.T) {
		var pls []struct {
			Size  string      `json:"size"`
			Pairs []pairReply `json:"pairs"`
			Total int         `json:"total"`
			Free  int         `json:"free"`
		}
		rep := h.do("GET", "/v1/admin/pools", adminToken, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &pls)
		if len(pls) != 6 {
			t.Fatalf("pools: got %v, want 6 size classes", len(pls))
		}
		for _, p := range pls {
			switch p.Size {
			case "128M":
				if len(p.Pairs) != 1 || p.Total != 8 || p.Free != 7 || p.Pairs[0].Master != m.Addr || p.Pairs[0].Free != 7 || p.Pairs[0].DBs != 8 {
					t.Fatalf("128M pool: got %+v, want one pair of 8 dbs with 7 free", p)
				}
			default:
				if len(p.Pairs) != 0 || p.Total != 0 || p.Free != 0 || p.Pairs == nil {
					t.Fatalf("%s pool: got %+v, want empty with pairs []", p.Size, p)
				}
			}
		}
	})
	t.Run("spares", func(t *testing.T) {
		var sp []struct {
			Addr string `json:"addr"`
		}
		rep := h.do("GET", "/v1/admin/spares", adminToken, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &sp)
		if len(sp) != 1 || sp[0].Addr != spare.Addr {
			t.Fatalf("spares: got %+v, want [%s]", sp, spare.Addr)
		}
	})
	t.Run("proxies", func(t *testing.T) {
		var ms []metadb.Member
		rep := h.do("GET", "/v1/admin/proxies", adminToken, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &ms)
		if len(ms) != 1 || ms[0].ID != "px1" || !ms[0].Live {
			t.Fatalf("proxies: got %+v, want live px1", ms)
		}
	})
	t.Run("keepers", func(t *testing.T) {
		rep := h.do("GET", "/v1/admin/keepers", adminToken, nil)
		rep.want(t, http.StatusOK)
		if got := strings.TrimSpace(string(rep.body)); got != "[]" {
			t.Fatalf("keepers: got %s, want []", got)
		}
	})
	t.Run("jobs", func(t *testing.T) {
		var jobs []jobReply
		rep := h.do("GET", "/v1/admin/jobs", adminToken, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &jobs)
		if len(jobs) != 1 || jobs[0].Kind != "create" || jobs[0].Tenant != "acme" {
			t.Fatalf("jobs: got %+v, want acme's create job", jobs)
		}
	})
}

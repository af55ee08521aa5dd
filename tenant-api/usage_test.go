package tenantapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

type usageReply struct {
	Points []struct {
		Time        time.Time `json:"time"`
		UsedBytes   int64     `json:"used_bytes"`
		QuotaBytes  int64     `json:"quota_bytes"`
		OpsPerSec   float64   `json:"ops_per_sec"`
		Connections int       `json:"connections"`
		Banned      bool      `json:"banned"`
	} `json:"points"`
}

type alertsReply struct {
	Webhook   string  `json:"webhook"`
	UsedPct   float64 `json:"used_pct"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Alerts    []struct {
		ID        string    `json:"id"`
		Metric    string    `json:"metric"`
		Value     float64   `json:"value"`
		Threshold float64   `json:"threshold"`
		Time      time.Time `json:"time"`
		State     string    `json:"state"`
		Attempts  int       `json:"attempts"`
		LastError string    `json:"last_error"`
	} `json:"alerts"`
}

// usageSetup gives acme and zeta one active db each (index 0) and records
// three samples of acme's, one second apart, as the master would.
func usageSetup(t *testing.T) (*harness, signupReply, signupReply, time.Time) {
	h := newHarness(t, nil)
	acme, zeta := h.signup("acme"), h.signup("zeta")
	ctx := t.Context()
	pair, err := h.store.AddPair(ctx, "64M", "127.0.0.1:1", "127.0.0.1:2", []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"acme", "zeta"} {
		_, job, err := h.store.ClaimDB(ctx, tenant, pair, metadb.WriteConfirmed, 1000, 8, "create-"+tenant)
		if err != nil {
			t.Fatal(err)
		}
		finishCreate(t, h.store, tenant, 0, job.ID, "127.0.0.1:7379")
	}
	f, ok, err := h.store.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("lead: %v %v", ok, err)
	}
	t0 := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	for i := range 3 {
		pt := metadb.UsagePoint{Tenant: "acme", Index: 0, Time: t0.Add(time.Duration(i) * time.Second),
			UsedBytes: int64(100 * i), QuotaBytes: 1000, OpsPerSec: 2.5, Connections: 3, Banned: i == 2}
		if err := h.store.AppendUsage(ctx, f, []metadb.UsagePoint{pt}, 100); err != nil {
			t.Fatal(err)
		}
	}
	return h, acme, zeta, t0
}

func TestUsageRoute(t *testing.T) {
	h, acme, zeta, t0 := usageSetup(t)
	get := func(q string) usageReply {
		t.Helper()
		r := h.do("GET", "/v1/dbs/0/usage"+q, acme.Token, nil)
		r.want(t, http.StatusOK)
		var u usageReply
		r.decode(t, &u)
		return u
	}
	u := get("")
	if len(u.Points) != 3 || !u.Points[0].Time.Equal(t0) || u.Points[2].UsedBytes != 200 || !u.Points[2].Banned ||
		u.Points[1].QuotaBytes != 1000 || u.Points[1].OpsPerSec != 2.5 || u.Points[1].Connections != 3 {
		t.Fatalf("all points: %+v", u.Points)
	}
	u = get("?since=" + url.QueryEscape(t0.Add(time.Second).Format(time.RFC3339)))
	if len(u.Points) != 2 || u.Points[0].UsedBytes != 100 {
		t.Fatalf("since t0+1s: %+v", u.Points)
	}
	// zeta's db 0 has no samples; acme's stay acme's.
	r := h.do("GET", "/v1/dbs/0/usage", zeta.Token, nil)
	r.want(t, http.StatusOK)
	var zu usageReply
	r.decode(t, &zu)
	if len(zu.Points) != 0 {
		t.Fatalf("zeta sees %+v", zu.Points)
	}

	for _, tc := range []struct {
		name, path, token string
		status            int
		text              string
	}{
		{"another tenant's index", "/v1/dbs/1/usage", acme.Token, http.StatusNotFound, "no db 1"},
		{"bad since", "/v1/dbs/0/usage?since=yesterday", acme.Token, http.StatusBadRequest, "bad since"},
		{"bad index", "/v1/dbs/x/usage", acme.Token, http.StatusBadRequest, "bad db index"},
		{"no token", "/v1/dbs/0/usage", "", http.StatusUnauthorized, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("GET", tc.path, tc.token, nil)
			r.want(t, tc.status)
			if !strings.Contains(r.errorText(t), tc.text) {
				t.Fatalf("error %q does not say %q", r.errorText(t), tc.text)
			}
		})
	}
}

func TestAlertsRoute(t *testing.T) {
	h, acme, zeta, _ := usageSetup(t)
	get := func(token string) alertsReply {
		t.Helper()
		r := h.do("GET", "/v1/dbs/0/alerts", token, nil)
		r.want(t, http.StatusOK)
		var a alertsReply
		r.decode(t, &a)
		return a
	}
	if a := get(acme.Token); a.Webhook != "" || a.UsedPct != 0 || len(a.Alerts) != 0 {
		t.Fatalf("no rule yet: %+v", a)
	}
	r := h.do("PUT", "/v1/dbs/0/alerts", acme.Token, map[string]any{"webhook": "http://127.0.0.1:9/hook", "used_pct": 80, "ops_per_sec": 1000})
	r.want(t, http.StatusOK)
	if a := get(acme.Token); a.Webhook != "http://127.0.0.1:9/hook" || a.UsedPct != 80 || a.OpsPerSec != 1000 {
		t.Fatalf("after PUT: %+v", a)
	}
	if a := get(zeta.Token); a.Webhook != "" {
		t.Fatalf("zeta's db 0 got acme's rule: %+v", a)
	}
	got, _, err := h.store.AuditLog(t.Context(), metadb.AuditQuery{Action: metadb.AuditDBAlerts})
	if err != nil || len(got) != 1 || got[0].Target != "acme/0" || got[0].Result != metadb.AuditOK {
		t.Fatalf("audit: %+v %v", got, err)
	}

	before := h.snapshot()
	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		text       string
	}{
		{"another tenant's index", "/v1/dbs/1/alerts", map[string]any{"webhook": "http://x/", "used_pct": 80}, http.StatusNotFound, "no db 1"},
		{"not http", "/v1/dbs/0/alerts", map[string]any{"webhook": "ftp://x/", "used_pct": 80}, http.StatusBadRequest, "bad webhook"},
		{"no webhook", "/v1/dbs/0/alerts", map[string]any{"used_pct": 80}, http.StatusBadRequest, "bad webhook"},
		{"credentials", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://u:p@x/"}, http.StatusBadRequest, "credentials"},
		{"pct over 100", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "used_pct": 101}, http.StatusBadRequest, "used_pct"},
		{"negative ops", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "ops_per_sec": -1}, http.StatusBadRequest, "ops_per_sec"},
		{"unknown field", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "bytes": 1}, http.StatusBadRequest, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("PUT", tc.path, acme.Token, tc.body)
			r.want(t, tc.status)
			if !strings.Contains(r.errorText(t), tc.text) {
				t.Fatalf("error %q does not say %q", r.errorText(t), tc.text)
			}
		})
	}
	after := h.snapshot()
	if d := diffKeys(before, after); len(d) != 0 {
		t.Fatalf("refused PUTs changed %v", d)
	}
}

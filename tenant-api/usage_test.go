package tenantapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
		ReplLag     int64     `json:"repl_lag_bytes"`
		Banned      bool      `json:"banned"`
	} `json:"points"`
}

type alertsReply struct {
	Webhook   string  `json:"webhook"`
	SecretSet bool    `json:"secret_set"`
	UsedPct   float64 `json:"used_pct"`
	OpsPerSec float64 `json:"ops_per_sec"`
	ReplLag   float64 `json:"repl_lag_bytes"`
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
func usageSetup(t testing.TB) (*harness, signupReply, signupReply, time.Time) {
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
			UsedBytes: int64(100 * i), QuotaBytes: 1000, OpsPerSec: 2.5, Connections: 3, ReplLagBytes: 7, Banned: i == 2}
		if err := h.store.AppendUsage(ctx, f, []metadb.UsagePoint{pt}, 100, 0); err != nil {
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
		u.Points[1].QuotaBytes != 1000 || u.Points[1].OpsPerSec != 2.5 || u.Points[1].Connections != 3 || u.Points[1].ReplLag != 7 {
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
	get := func(token string) (alertsReply, string) {
		t.Helper()
		r := h.do("GET", "/v1/dbs/0/alerts", token, nil)
		r.want(t, http.StatusOK)
		var a alertsReply
		r.decode(t, &a)
		return a, string(r.body)
	}
	if a, _ := get(acme.Token); a.Webhook != "" || a.UsedPct != 0 || a.SecretSet || len(a.Alerts) != 0 {
		t.Fatalf("no rule yet: %+v", a)
	}
	const secret, token = "SIGNING-SECRET-q7", "QUERY-TOKEN-z9"
	hook := "https://hooks.example.com/granary/in?token=" + token + "#frag"
	var bodies []string
	r := h.do("PUT", "/v1/dbs/0/alerts", acme.Token, map[string]any{"webhook": hook, "secret": secret,
		"used_pct": 80, "ops_per_sec": 1000, "repl_lag_bytes": 1 << 20})
	r.want(t, http.StatusOK)
	bodies = append(bodies, string(r.body))
	a, body := get(acme.Token)
	bodies = append(bodies, body)
	if a.Webhook != "https://hooks.example.com/granary/in?redacted" || !a.SecretSet || a.UsedPct != 80 || a.OpsPerSec != 1000 || a.ReplLag != 1<<20 {
		t.Fatalf("after PUT: %+v", a)
	}
	if stored, err := h.store.AlertRule(t.Context(), "acme", 0); err != nil || stored.Secret != secret || stored.Webhook != hook {
		t.Fatalf("stored rule %+v %v: the master needs the whole URL and the secret", stored, err)
	}
	if a, _ := get(zeta.Token); a.Webhook != "" {
		t.Fatalf("zeta's db 0 got acme's rule: %+v", a)
	}
	// Without "secret" the stored one stays; "" removes it.
	h.do("PUT", "/v1/dbs/0/alerts", acme.Token, map[string]any{"webhook": hook, "used_pct": 70}).want(t, http.StatusOK)
	if a, body := get(acme.Token); !a.SecretSet || a.UsedPct != 70 {
		t.Fatalf("PUT without a secret: %+v", a)
	} else {
		bodies = append(bodies, body)
	}
	h.do("PUT", "/v1/dbs/0/alerts", acme.Token, map[string]any{"webhook": "http://localhost:9/x", "secret": "", "used_pct": 70}).want(t, http.StatusOK)
	if a, _ := get(acme.Token); a.SecretSet || a.Webhook != "http://localhost:9/x" {
		t.Fatalf("PUT with an empty secret, a name (checked at dial time): %+v", a)
	}
	got, _, err := h.store.AuditLog(t.Context(), metadb.AuditQuery{Action: metadb.AuditDBAlerts})
	if err != nil || len(got) != 3 || got[0].Target != "acme/0" || got[0].Result != metadb.AuditOK {
		t.Fatalf("audit: %+v %v, want one entry per PUT", got, err)
	}

	before := h.snapshot()
	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		text       string
	}{
		{"another tenant's index", "/v1/dbs/1/alerts", map[string]any{"webhook": "http://x/", "used_pct": 80}, http.StatusNotFound, "no db 1"},
		{"not http", "/v1/dbs/0/alerts", map[string]any{"webhook": "ftp://x/", "used_pct": 80}, http.StatusBadRequest, "scheme \"ftp\""},
		{"file", "/v1/dbs/0/alerts", map[string]any{"webhook": "file:///etc/passwd"}, http.StatusBadRequest, "bad webhook"},
		{"no webhook", "/v1/dbs/0/alerts", map[string]any{"used_pct": 80}, http.StatusBadRequest, "bad webhook"},
		{"too long", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/" + strings.Repeat("a", 2100)}, http.StatusBadRequest, "longer than 2048"},
		{"credentials", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://u:" + secret + "@x/"}, http.StatusBadRequest, "credentials"},
		{"loopback", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://127.0.0.1:9/hook"}, http.StatusBadRequest, "address not allowed"},
		{"loopback v6", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://[::1]:9/hook"}, http.StatusBadRequest, "address not allowed"},
		{"private", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://10.0.0.7/hook"}, http.StatusBadRequest, "address not allowed"},
		{"metadata", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://169.254.169.254/latest/meta-data/"}, http.StatusBadRequest, "address not allowed"},
		{"bad port", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x:99999/"}, http.StatusBadRequest, "bad webhook"},
		{"long secret", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "secret": strings.Repeat("s", 300)}, http.StatusBadRequest, "bad secret"},
		{"pct over 100", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "used_pct": 101}, http.StatusBadRequest, "used_pct"},
		{"negative ops", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "ops_per_sec": -1}, http.StatusBadRequest, "ops_per_sec"},
		{"negative lag", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "repl_lag_bytes": -1}, http.StatusBadRequest, "repl_lag_bytes"},
		{"unknown field", "/v1/dbs/0/alerts", map[string]any{"webhook": "http://x/", "bytes": 1}, http.StatusBadRequest, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("PUT", tc.path, acme.Token, tc.body)
			r.want(t, tc.status)
			if !strings.Contains(r.errorText(t), tc.text) {
				t.Fatalf("error %q does not say %q", r.errorText(t), tc.text)
			}
			bodies = append(bodies, string(r.body))
		})
	}
	after := h.snapshot()
	if d := diffKeys(before, after); len(d) != 0 {
		t.Fatalf("refused PUTs changed %v", d)
	}
	all, _, err := h.store.AuditLog(t.Context(), metadb.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	audit, _ := json.Marshal(all)
	for _, leak := range []string{secret, token} {
		if strings.Contains(string(audit), leak) {
			t.Fatalf("the audit stream holds %q", leak)
		}
		for _, b := range bodies {
			if strings.Contains(b, leak) {
				t.Fatalf("an answer holds %q: %s", leak, b)
			}
		}
	}
}

// FuzzPutAlerts puts arbitrary bodies to PUT /v1/dbs/0/alerts: every answer
// is JSON below 500; a 200 shows a webhook without its query and never the
// secret it was given.
func FuzzPutAlerts(f *testing.F) {
	h, acme, _, _ := usageSetup(f)
	handler := h.api.Handler()
	for _, seed := range []string{
		`{"webhook":"https://hooks.example.com/x?t=1","secret":"s","used_pct":80}`, `{"webhook":"http://127.0.0.1/"}`,
		`{"webhook":"http://[::ffff:127.0.0.1]:80/"}`, `{"webhook":"http://0x7f000001/"}`, `{"webhook":"http://u@x/"}`,
		`{"webhook":"https://x/#?q","ops_per_sec":1e9}`, `{"webhook":"gopher://x/"}`, `{"webhook":"//x/"}`, `{}`, `null`, ``,
		`{"webhook":"http://x:0/"}`, `{"webhook":"http://%zz/"}`, `{"webhook":"https://x/?","secret":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("PUT", "/v1/dbs/0/alerts", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+acme.Token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		if rec.Code >= 500 || !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("status %d body %q", rec.Code, rec.Body.Bytes())
		}
		if rec.Code != http.StatusOK {
			return
		}
		var in struct {
			Secret *string `json:"secret"`
		}
		_ = json.Unmarshal(body, &in)
		var out alertsReply
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(out.Webhook)
		if err != nil || (u.RawQuery != "" && u.RawQuery != "redacted") || u.Fragment != "" || u.User != nil {
			t.Fatalf("shown webhook %q", out.Webhook)
		}
		if in.Secret != nil && len(*in.Secret) >= 4 && strings.Contains(rec.Body.String(), *in.Secret) {
			t.Fatalf("the answer %s holds the secret", rec.Body.Bytes())
		}
	})
}

package master

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
)

func TestCrossing(t *testing.T) {
	// A threshold of 80 seen by a run of samples: it fires once per
	// crossing and re-arms only when a sample falls below.
	values := []float64{10, 79.9, 80, 95, 85, 79, 81, 100, 0, 80}
	fires := []bool{false, false, true, false, false, false, true, false, false, true}
	above := false
	for i, v := range values {
		var fire bool
		above, fire = crossing(above, v, 80)
		if fire != fires[i] {
			t.Fatalf("sample %d (%v): fire %v, want %v", i, v, fire, fires[i])
		}
	}
	tests := []struct {
		name            string
		wasAbove        bool
		value, thresh   float64
		wantAbove, fire bool
	}{
		{"below stays quiet", false, 10, 80, false, false},
		{"at the threshold fires", false, 80, 80, true, true},
		{"above after below fires", false, 90, 80, true, true},
		{"still above does not fire again", true, 90, 80, true, false},
		{"falls below re-arms", true, 10, 80, false, false},
		{"threshold 0 is off", false, 1e9, 0, false, false},
		{"threshold 0 disarms", true, 1e9, 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, f := crossing(tc.wasAbove, tc.value, tc.thresh)
			if a != tc.wantAbove || f != tc.fire {
				t.Fatalf("crossing(%v, %v, %v) = %v, %v; want %v, %v", tc.wasAbove, tc.value, tc.thresh, a, f, tc.wantAbove, tc.fire)
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	pt := metadb.UsagePoint{Tenant: "t", Index: 2, UsedBytes: 90, QuotaBytes: 100, OpsPerSec: 500}
	r := metadb.AlertRule{Webhook: "http://x", UsedPct: 80, OpsPerSec: 1000}
	next, alerts, changed := evaluate(r, pt, true)
	if !changed || !next.UsedAbove || next.OpsAbove || len(alerts) != 1 || alerts[0].Metric != metricUsedPct || alerts[0].Value != 90 {
		t.Fatalf("first sample: %+v %+v %v", next, alerts, changed)
	}
	if _, alerts, changed := evaluate(next, pt, true); changed || len(alerts) != 0 {
		t.Fatalf("same sample again: %+v %v", alerts, changed)
	}
	pt.OpsPerSec, pt.QuotaBytes = 2000, 0 // no quota: used_pct is 0, below
	if n, alerts, _ := evaluate(next, pt, false); n.OpsAbove || len(alerts) != 0 {
		t.Fatalf("ops unknown: %+v %+v, want no ops decision", n, alerts)
	}
	next, alerts, changed = evaluate(next, pt, true)
	if !changed || next.UsedAbove || !next.OpsAbove || len(alerts) != 1 || alerts[0].Metric != metricOpsPerSec {
		t.Fatalf("ops sample: %+v %+v %v", next, alerts, changed)
	}
}

func TestOpsRates(t *testing.T) {
	t0 := time.Unix(1000, 0)
	start := time.Unix(1, 0)
	m := func(id string, started time.Time, at time.Duration, ops map[string]uint64) *metadb.Member {
		return &metadb.Member{ID: id, Started: started, Reported: t0.Add(at), DBOps: ops}
	}
	var o opsRates
	steps := []struct {
		name  string
		ms    []*metadb.Member
		want  map[string]float64
		known bool
	}{
		{"first report gives no rate", []*metadb.Member{m("a", start, 0, map[string]uint64{"t/0": 100})}, map[string]float64{}, false},
		{"growth over time", []*metadb.Member{m("a", start, 2*time.Second, map[string]uint64{"t/0": 300, "t/1": 10})},
			map[string]float64{"t/0": 100, "t/1": 5}, true},
		{"same report keeps the rate, a new proxy adds none yet", []*metadb.Member{
			m("a", start, 2*time.Second, map[string]uint64{"t/0": 300, "t/1": 10}), m("b", start, 0, map[string]uint64{"t/0": 7})},
			map[string]float64{"t/0": 100, "t/1": 5}, false},
		{"rates of proxies add up", []*metadb.Member{
			m("a", start, 3*time.Second, map[string]uint64{"t/0": 400, "t/1": 10}), m("b", start, time.Second, map[string]uint64{"t/0": 57})},
			map[string]float64{"t/0": 150, "t/1": 0}, true},
		{"a restarted proxy starts over", []*metadb.Member{m("a", start.Add(time.Hour), 4*time.Second, map[string]uint64{"t/0": 1})},
			map[string]float64{}, false},
		{"no proxies, no ops", nil, map[string]float64{}, true},
	}
	for _, st := range steps {
		got, known := o.observe(st.ms)
		if known != st.known {
			t.Fatalf("%s: known %v, want %v", st.name, known, st.known)
		}
		if len(got) != len(st.want) {
			t.Fatalf("%s: got %v, want %v", st.name, got, st.want)
		}
		for k, v := range st.want {
			if got[k] != v {
				t.Fatalf("%s: got %v, want %v", st.name, got, st.want)
			}
		}
	}
}

func TestBackoff(t *testing.T) {
	for attempts, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 30 * time.Second} {
		if got := backoff(time.Second, 30*time.Second, attempts); got != want {
			t.Fatalf("backoff after %d: %v, want %v", attempts, got, want)
		}
	}
}

// receiver is a webhook that fails its first request with a 500.
type receiver struct {
	mu   sync.Mutex
	got  []alertPayload
	seen int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p alertPayload
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &p)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.got = append(rc.got, p)
	rc.seen++
	if rc.seen == 1 {
		http.Error(w, "not yet", http.StatusInternalServerError)
	}
}

func (rc *receiver) requests() []alertPayload {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]alertPayload(nil), rc.got...)
}

func TestUsageSamplesAndAlerts(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	m, err := New(Config{ID: "m1", LeaseTTL: 600 * time.Millisecond, JobPoll: 10 * time.Millisecond,
		Usage: UsageConfig{Interval: 30 * time.Millisecond, Keep: 50, AlertPoll: 10 * time.Millisecond, RetryBase: 50 * time.Millisecond}},
		c.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(mctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	rc := &receiver{}
	hook := httptest.NewServer(rc)
	t.Cleanup(hook.Close)

	db, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 1000, 8, "create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	// A proxy reporting two of the tenant's connections.
	if err := c.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px", TenantConns: map[string]int{"acme": 2}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.store.SetAlertRule(ctx, "acme", db.Index, metadb.AlertRule{Webhook: hook.URL, UsedPct: 80}); err != nil {
		t.Fatal(err)
	}
	setUsed := func(n int64) {
		t.Helper()
		_, err := c.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
			d.UsedBytes = n
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	points := func() []metadb.UsagePoint {
		pts, err := c.store.Usage(ctx, "acme", db.Index, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		return pts
	}
	// waitSamples waits until the series holds a point with used bytes n,
	// then for three more samples.
	waitSamples := func(n int64) {
		t.Helper()
		var at time.Time
		redistest.WaitFor(t, 5*time.Second, "a sample of the new size", func() bool {
			pts := points()
			if len(pts) > 0 && pts[len(pts)-1].UsedBytes == n {
				at = pts[len(pts)-1].Time
				return true
			}
			return false
		})
		redistest.WaitFor(t, 5*time.Second, "three more samples", func() bool {
			pts := points()
			later := 0
			for _, p := range pts {
				if p.Time.After(at) {
					later++
				}
			}
			return later >= 3
		})
	}
	alerts := func() []*metadb.Alert {
		as, err := c.store.Alerts(ctx, "acme", db.Index)
		if err != nil {
			t.Fatal(err)
		}
		return as
	}

	setUsed(900)
	waitSamples(900)
	redistest.WaitFor(t, 5*time.Second, "the alert delivered after a retry", func() bool {
		as := alerts()
		return len(as) == 1 && as[0].State == metadb.AlertDelivered
	})
	a := alerts()[0]
	if a.Attempts != 2 || a.Metric != metricUsedPct || a.Value != 90 || a.Threshold != 80 {
		t.Fatalf("alert %+v: want used_pct 90 over 80, delivered at the second attempt", a)
	}
	reqs := rc.requests()
	if len(reqs) != 2 || reqs[0].ID != a.ID || reqs[1].ID != a.ID || reqs[1].Tenant != "acme" || reqs[1].Index != db.Index {
		t.Fatalf("webhook got %+v, want alert %s twice", reqs, a.ID)
	}
	pt := points()[len(points())-1]
	if pt.QuotaBytes != 1000 || pt.Connections != 2 || pt.Banned {
		t.Fatalf("last point %+v", pt)
	}

	// Staying above fires nothing more; falling below re-arms; crossing
	// again fires a second alert, delivered at once.
	setUsed(950)
	waitSamples(950)
	setUsed(100)
	waitSamples(100)
	if n := len(alerts()); n != 1 {
		t.Fatalf("%d alerts before the second crossing, want 1", n)
	}
	setUsed(850)
	waitSamples(850)
	redistest.WaitFor(t, 5*time.Second, "the second alert delivered", func() bool {
		as := alerts()
		return len(as) == 2 && as[1].State == metadb.AlertDelivered
	})
	if reqs := rc.requests(); len(reqs) != 3 || reqs[2].ID == a.ID {
		t.Fatalf("webhook got %+v, want a third request for a new alert", reqs)
	}
	if n := len(points()); n > 50 {
		t.Fatalf("series holds %d points, cap 50", n)
	}
	got, _, err := c.store.AuditLog(ctx, metadb.AuditQuery{Action: metadb.AuditAlertFire})
	if err != nil || len(got) != 2 {
		t.Fatalf("alert.fire audit entries %+v, %v; want 2", got, err)
	}
}

func TestDeliverDoesNotFollowRedirects(t *testing.T) {
	var hits int
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits++ }))
	t.Cleanup(target.Close)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	c := webhookClient(time.Second)
	if err := deliver(t.Context(), c, &metadb.Alert{ID: "1", Webhook: redirect.URL}); err == nil {
		t.Fatal("a redirect counted as delivered")
	}
	if hits != 0 {
		t.Fatalf("the redirect was followed (%d hits)", hits)
	}
	if err := deliver(t.Context(), c, &metadb.Alert{ID: "1", Webhook: target.URL}); err != nil || hits != 1 {
		t.Fatalf("direct delivery: %v, %d hits", err, hits)
	}
}

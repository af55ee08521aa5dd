package master

import (
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

func TestCrossing(t *testing.T) {
	// A threshold of 80 seen by a run of samples: it fires once per
	// crossing and re-arms only when a sample falls below 72 (rearm).
	values := []float64{10, 79.9, 80, 95, 85, 79, 81, 72, 81, 71.9, 80, 100, 0, 80}
	fires := []bool{false, false, true, false, false, false, false, false, false, false, true, false, false, true}
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
		{"just below stays above (hysteresis)", true, 75, 80, true, false},
		{"falls below the re-arm level re-arms", true, 71, 80, false, false},
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
	pt := metadb.UsagePoint{Tenant: "t", Index: 2, UsedBytes: 90, QuotaBytes: 100, OpsPerSec: 500, ReplLagBytes: -1}
	r := metadb.AlertRule{Webhook: "http://x", UsedPct: 80, OpsPerSec: 1000, ReplLagBytes: 4096}
	next, alerts, changed := evaluate(r, pt, true)
	if !changed || !next.Above[metadb.MetricUsedPct] || next.Above[metadb.MetricOpsPerSec] || len(alerts) != 1 ||
		alerts[0].Metric != metadb.MetricUsedPct || alerts[0].Value != 90 || alerts[0].Threshold != 80 {
		t.Fatalf("first sample: %+v %+v %v", next, alerts, changed)
	}
	if _, alerts, changed := evaluate(next, pt, true); changed || len(alerts) != 0 {
		t.Fatalf("same sample again: %+v %v", alerts, changed)
	}
	pt.OpsPerSec, pt.QuotaBytes = 2000, 0 // no quota: used_pct is 0, below
	if n, alerts, _ := evaluate(next, pt, false); n.Above[metadb.MetricOpsPerSec] || len(alerts) != 0 {
		t.Fatalf("ops unknown: %+v %+v, want no ops decision", n, alerts)
	}
	next, alerts, changed = evaluate(next, pt, true)
	if !changed || next.Above[metadb.MetricUsedPct] || !next.Above[metadb.MetricOpsPerSec] || len(alerts) != 1 || alerts[0].Metric != metadb.MetricOpsPerSec {
		t.Fatalf("ops sample: %+v %+v %v", next, alerts, changed)
	}
	pt.ReplLagBytes = 5000
	next, alerts, _ = evaluate(next, pt, true)
	if !next.Above[metadb.MetricReplLag] || len(alerts) != 1 || alerts[0].Metric != metadb.MetricReplLag || alerts[0].Value != 5000 {
		t.Fatalf("lag sample: %+v %+v", next, alerts)
	}
	pt.ReplLagBytes = -1 // unknown: keeps the state
	if n, alerts, changed := evaluate(next, pt, true); !n.Above[metadb.MetricReplLag] || len(alerts) != 0 || changed {
		t.Fatalf("lag unknown: %+v %+v %v", n, alerts, changed)
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

func TestPickDue(t *testing.T) {
	now := time.Unix(1000, 0)
	a := func(id, tenant string, next time.Duration) *metadb.Alert {
		return &metadb.Alert{ID: id, Tenant: tenant, NextTry: now.Add(next)}
	}
	pending := []*metadb.Alert{a("10", "flood", 0), a("9", "flood", 0), a("11", "b", 0), a("12", "c", time.Second), a("13", "d", 0), a("14", "e", 0)}
	ids := func(as []*metadb.Alert) (out []string) {
		for _, x := range as {
			out = append(out, x.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		busy map[string]bool
		last string
		free int
		want []string
	}{
		{"one per tenant, oldest first, tenants in turn", nil, "", 4, []string{"11", "13", "14", "9"}},
		{"the turn goes on after the last served", nil, "d", 4, []string{"14", "9", "11", "13"}},
		{"a busy tenant waits", map[string]bool{"flood": true}, "", 4, []string{"11", "13", "14"}},
		{"free workers bound it", nil, "b", 2, []string{"13", "14"}},
		{"no free worker", nil, "", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(pickDue(pending, tc.busy, tc.last, tc.free, now))
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

func TestSettle(t *testing.T) {
	cfg := UsageConfig{RetryBase: time.Second, RetryMax: time.Minute, Attempts: 3}
	now := time.Unix(1000, 0)
	a := &metadb.Alert{State: metadb.AlertPending}
	settle(a, deliveryError("delivery failed: HTTP 500"), cfg, now)
	if a.State != metadb.AlertPending || a.Attempts != 1 || !a.NextTry.Equal(now.Add(time.Second)) || a.LastError != "delivery failed: HTTP 500" {
		t.Fatalf("after a 500: %+v", a)
	}
	settle(a, nil, cfg, now)
	if a.State != metadb.AlertDelivered || a.LastError != "" || !a.NextTry.IsZero() {
		t.Fatalf("after a success: %+v", a)
	}
	b := &metadb.Alert{State: metadb.AlertPending, Attempts: 2}
	settle(b, errConnRefused, cfg, now)
	if b.State != metadb.AlertFailed || b.LastError != "connection refused" {
		t.Fatalf("after the last attempt: %+v", b)
	}
	c := &metadb.Alert{State: metadb.AlertPending}
	settle(c, errRuleRemoved, cfg, now)
	if c.State != metadb.AlertCancelled {
		t.Fatalf("rule removed: %+v", c)
	}
}

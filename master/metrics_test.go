package master

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

func TestMetricsEndpoint(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	m, err := New(Config{ID: "m1", LeaseTTL: 600 * time.Millisecond, JobPoll: 10 * time.Millisecond,
		QuotaInterval: 20 * time.Millisecond, MetricsAddr: "127.0.0.1:0"}, c.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if m.MetricsAddr() != "" {
		t.Fatalf("metrics address %q before Run, want none", m.MetricsAddr())
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	redistest.WaitFor(t, 5*time.Second, "metrics listener", func() bool { return m.MetricsAddr() != "" })

	db, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 1000, 8, "create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	if _, err := c.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
		d.UsedBytes = 2000
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "db banned", func() bool {
		d, err := c.store.DB(ctx, "acme", db.Index)
		return err == nil && d.Banned
	})

	want := []string{
		`granary_master_is_leader 1`,
		`granary_master_lease_renewals_total`,
		`granary_master_jobs_finished_total{kind="create",result="done"}`,
		`granary_master_job_step_duration_seconds_count{kind="create",step="flush"}`,
		`granary_master_job_step_duration_seconds_count{kind="create",step="route"}`,
		`granary_master_quota_bans_total`,
		`granary_master_pairs{size="64M",state="active"} 1`,
		`granary_master_reclaim_passes_total`,
		`go_goroutines`,
	}
	var text string
	redistest.WaitFor(t, 5*time.Second, "every metric", func() bool {
		text = metricshttp.Scrape(m.MetricsAddr())
		return metricshttp.HasAll(text, want...)
	})
	for _, w := range []string{"granary_master_jobs_running", "granary_master_lease_failures_total"} {
		if !strings.Contains(text, "# TYPE "+w+" ") {
			t.Errorf("scrape lacks %s:\n%s", w, text)
		}
	}

	// Every name the scrape shows is one MetricNames lists.
	names := map[string]bool{}
	for _, n := range MetricNames() {
		names[n] = true
	}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" && !names[f[2]] {
			t.Errorf("scraped %s, which MetricNames does not list", f[2])
		}
	}
}

// TestMetricsNoAddr: without an address nothing listens.
func TestMetricsNoAddr(t *testing.T) {
	c := newCluster(t)
	m, err := New(Config{ID: "m1", LeaseTTL: 600 * time.Millisecond}, c.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	redistest.WaitFor(t, 5*time.Second, "leading", func() bool {
		var v dto.Metric
		return m.metrics.isLeader.Write(&v) == nil && v.GetGauge().GetValue() == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a := m.MetricsAddr(); a != "" {
		t.Fatalf("metrics address %q, want none", a)
	}
}

func TestJobSeen(t *testing.T) {
	at := func(ms int) string {
		return metadb.Timestamp(time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond))
	}
	j := &metadb.Job{Kind: metadb.JobCreate, Created: at(0), Log: []metadb.JobStep{
		{Step: metadb.StepClaim, At: at(0)}, {Step: metadb.StepFlush, At: at(250)}, {Step: metadb.StepRoute, At: at(1250)}}}
	tests := []struct {
		name       string
		seen       int
		wantSeen   int
		wantCounts map[metadb.Step]uint64
		wantSum    float64
	}{
		{"first load leaves history alone", -1, 3, nil, 0},
		{"new entries observed", 1, 3, map[metadb.Step]uint64{metadb.StepFlush: 1, metadb.StepRoute: 1}, 1.25},
		{"nothing new", 3, 3, nil, 0},
		{"a log shorter than seen restarts", 5, 3, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMetrics(nil)
			if got := m.jobSeen(j, tc.seen); got != tc.wantSeen {
				t.Fatalf("seen %d, want %d", got, tc.wantSeen)
			}
			fams, _ := m.reg.Gather()
			counts, sum := map[metadb.Step]uint64{}, 0.0
			for _, f := range fams {
				if f.GetName() != "granary_master_job_step_duration_seconds" {
					continue
				}
				for _, s := range f.GetMetric() {
					for _, l := range s.GetLabel() {
						if l.GetName() == "step" {
							counts[metadb.Step(l.GetValue())] = s.GetHistogram().GetSampleCount()
						}
					}
					sum += s.GetHistogram().GetSampleSum()
				}
			}
			if len(counts) != len(tc.wantCounts) || sum < tc.wantSum-1e-9 || sum > tc.wantSum+1e-9 {
				t.Fatalf("got counts %v sum %v, want %v sum %v", counts, sum, tc.wantCounts, tc.wantSum)
			}
			for s, n := range tc.wantCounts {
				if counts[s] != n {
					t.Fatalf("got counts %v, want %v", counts, tc.wantCounts)
				}
			}
		})
	}
}

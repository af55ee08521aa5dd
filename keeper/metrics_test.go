package keeper

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	dto "github.com/prometheus/client_model/go"
)

// TestMetricsEndpoint watches a pair, measures its db, fails it over and
// attaches a spare, then finds each of those in the keeper's /metrics.
func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	spareAndAckedWrite(t, e)
	cfg := Config{ID: "k1", LeaseTTL: time.Second, PairsPoll: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond,
		DetectTime: 300 * time.Millisecond, SizingSweep: time.Hour, MetricsAddr: "127.0.0.1:0"}
	k, stop := startKeeper(t, e.store, cfg)
	redistest.WaitFor(t, 5*time.Second, "metrics listener", func() bool { return k.MetricsAddr() != "" })
	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "the db measured", func() bool {
		s, err := e.store.DBSize(ctx, "acme", e.db.Index)
		return err == nil && s.Keys == 1
	})
	pair := `pair="` + e.pair.ID + `"`
	if text := metricshttp.Scrape(k.MetricsAddr()); !metricshttp.HasSample(text, "granary_keeper_watched_pairs 1") ||
		!metricshttp.HasSample(text, `granary_keeper_probe_duration_seconds_count{`+pair+`,role="master"}`) ||
		!metricshttp.HasSample(text, `granary_keeper_measurements_total{method="exact"}`) ||
		!metricshttp.HasSample(text, `granary_keeper_measurement_duration_seconds_count{method="exact"}`) {
		t.Fatalf("scrape of a watching keeper lacks a metric:\n%s", text)
	}

	e.master.Kill()
	redistest.WaitFor(t, 10*time.Second, "the attach step done", func() bool {
		jobs, _ := e.store.ActiveJobs(ctx)
		for _, j := range jobs {
			if j.Kind == metadb.JobReplace && j.Step == metadb.StepRecord {
				return true
			}
		}
		return false
	})
	want := []string{
		`granary_keeper_probe_failures_total{` + pair + `,role="master"}`,
		`granary_keeper_failovers_total{reason="` + reasonMasterDown + `"} 1`,
		`granary_keeper_replica_attaches_total{result="` + attachInSync + `"}`,
		`process_resident_memory_bytes`,
	}
	var text string
	redistest.WaitFor(t, 5*time.Second, "every metric", func() bool {
		text = metricshttp.Scrape(k.MetricsAddr())
		return metricshttp.HasAll(text, want...)
	})
	names := map[string]bool{}
	for _, n := range MetricNames() {
		names[n] = true
	}
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" && !names[f[2]] {
			t.Errorf("scraped %s, which MetricNames does not list", f[2])
		}
	}
	addr := k.MetricsAddr()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if metricshttp.Scrape(addr) != "" {
		t.Fatalf("/metrics still answers after Run returned")
	}
}

// TestResizeCopyMetrics: a copy session counts the keys it migrates and
// their estimated bytes.
func TestResizeCopyMetrics(t *testing.T) {
	ctx := t.Context()
	sm, _ := redistest.StartPair(t, "databases", "4")
	dm, _ := redistest.StartPair(t, "databases", "4")
	p := sm.ClientDB(t, 1).Pipeline()
	for i := 0; i < 1200; i++ {
		p.Set(ctx, "k"+strconv.Itoa(i), i, 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := openCopy(ctx, sm.Addr, "", 1, dm.Addr, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	m := newMetrics(&Keeper{})
	s.onCopy = m.copied(100)
	if err := s.fullCopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var keys, bytes dto.Metric
	_ = m.copiedKeys.Write(&keys)
	_ = m.copiedBytes.Write(&bytes)
	if keys.GetCounter().GetValue() != 1200 || bytes.GetCounter().GetValue() != 120000 {
		t.Fatalf("copied keys %v bytes %v, want 1200 and 120000", keys.GetCounter().GetValue(), bytes.GetCounter().GetValue())
	}
}

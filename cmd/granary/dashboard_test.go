package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/granary-db/granary/keeper"
	"github.com/granary-db/granary/master"
	"github.com/granary-db/granary/proxy"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// dashboardPath is the Grafana dashboard the README points to.
const dashboardPath = "../../docs/grafana-dashboard.json"

// dashPanel is the part of a Grafana panel the test reads; rows nest
// panels.
type dashPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []dashPanel `json:"panels"`
}

// metricName finds the metric names in a PromQL expression: ours, Go's
// and the process collector's.
var metricName = regexp.MustCompile(`\b(?:granary|go|process)_[a-zA-Z0-9_]*`)

// TestGrafanaDashboard loads docs/grafana-dashboard.json and checks that it
// is a dashboard on the DS_PROMETHEUS datasource variable and that every
// metric its queries name is one some component registers, so that the
// dashboard cannot drift from the code.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string      `json:"title"`
		UID        string      `json:"uid"`
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("dashboard without title or uid")
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasDS {
		t.Fatalf("no DS_PROMETHEUS datasource variable in templating")
	}

	known := map[string]bool{}
	for _, names := range [][]string{tenantapi.MetricNames(), proxy.MetricNames(), master.MetricNames(), keeper.MetricNames()} {
		for _, n := range names {
			known[n] = true
		}
	}
	registered := func(name string) bool {
		if known[name] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} { // a histogram's series
			if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
				return true
			}
		}
		return false
	}

	ids := map[int]bool{}
	used := map[string]bool{}
	var walk func(ps []dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || p.Datasource.Type != "prometheus" {
				t.Errorf("panel %q: datasource %+v, want prometheus ${DS_PROMETHEUS}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				names := metricName.FindAllString(q.Expr, -1)
				if len(names) == 0 {
					t.Errorf("panel %q: query %q names no granary metric", p.Title, q.Expr)
				}
				for _, n := range names {
					used[n] = true
					if !registered(n) {
						t.Errorf("panel %q: query %q uses %s, which no component registers", p.Title, q.Expr, n)
					}
				}
			}
		}
	}
	walk(d.Panels)
	// The panels the task asks for: a metric of each area is on the board.
	for _, n := range []string{"granary_api_requests_total", "granary_proxy_ops_total", "granary_proxy_clients",
		"granary_proxy_confirm_lag_seconds_bucket", "granary_master_is_leader", "granary_master_jobs_running",
		"granary_keeper_probe_duration_seconds_bucket", "granary_keeper_failovers_total", "granary_keeper_measurements_total"} {
		if !used[n] {
			t.Errorf("no panel queries %s", n)
		}
	}
}

// TestMetricNamesPrefixed: every metric of our own is granary_<component>_…
// or one the API kept from before (granary_db_…, granary_dbs_…), and each
// component's names are its own.
func TestMetricNamesPrefixed(t *testing.T) {
	for _, tc := range []struct {
		component string
		names     []string
		prefixes  []string
	}{
		{"api", tenantapi.MetricNames(), []string{"granary_api_", "granary_db_", "granary_dbs_"}},
		{"proxy", proxy.MetricNames(), []string{"granary_proxy_"}},
		{"master", master.MetricNames(), []string{"granary_master_"}},
		{"keeper", keeper.MetricNames(), []string{"granary_keeper_"}},
	} {
		t.Run(tc.component, func(t *testing.T) {
			ours := 0
			for _, n := range tc.names {
				if !strings.HasPrefix(n, "granary_") {
					continue
				}
				ours++
				ok := false
				for _, p := range tc.prefixes {
					ok = ok || strings.HasPrefix(n, p)
				}
				if !ok {
					t.Errorf("%s registers %s, want a name starting with one of %v", tc.component, n, tc.prefixes)
				}
			}
			if ours == 0 {
				t.Fatalf("%s lists no granary metric", tc.component)
			}
		})
	}
}

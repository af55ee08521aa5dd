package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLayoutFor(t *testing.T) {
	persist := []string{"appendonly", "yes", "appendfsync", "everysec"}
	for _, tc := range []struct {
		name  string
		pools []devPool
		want  devLayout
	}{
		{
			name:  "the dev pools: metadb, a pair per pool, a spare",
			pools: devPools,
			want: devLayout{
				servers: []devServer{
					{name: "metadb", args: persist},
					{name: "pool-64M-master", args: []string{"maxmemory", "1gb", "databases", "16"}},
					{name: "pool-64M-replica", replicaOf: "pool-64M-master", args: append([]string{"maxmemory", "1gb", "databases", "16"}, persist...)},
					{name: "pool-256M-master", args: []string{"maxmemory", "4gb", "databases", "16"}},
					{name: "pool-256M-replica", replicaOf: "pool-256M-master", args: append([]string{"maxmemory", "4gb", "databases", "16"}, persist...)},
					{name: "spare-1", args: []string{"maxmemory", "4gb", "databases", "16"}},
				},
				metadb: "metadb",
				pairs: []devPair{
					{size: "64M", master: "pool-64M-master", replica: "pool-64M-replica"},
					{size: "256M", master: "pool-256M-master", replica: "pool-256M-replica"},
				},
				spare: "spare-1",
			},
		},
		{
			name:  "no pools: metadb and spare",
			pools: nil,
			want: devLayout{
				servers: []devServer{{name: "metadb", args: persist}, {name: "spare-1", args: []string{"maxmemory", "4gb", "databases", "16"}}},
				metadb:  "metadb",
				spare:   "spare-1",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := layoutFor(tc.pools); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestLayoutNames: every server has its own folder, and a replica starts
// after its master.
func TestLayoutNames(t *testing.T) {
	started := map[string]bool{}
	for _, s := range layoutFor(devPools).servers {
		if started[s.name] {
			t.Fatalf("got server %s twice, want one folder each", s.name)
		}
		if s.replicaOf != "" && !started[s.replicaOf] {
			t.Fatalf("got replica %s before its master %s, want it after", s.name, s.replicaOf)
		}
		started[s.name] = true
	}
}

func TestAdminCalls(t *testing.T) {
	l := layoutFor(devPools)
	addrs := map[string]string{
		"metadb":          "127.0.0.1:1",
		"pool-64M-master": "127.0.0.1:2", "pool-64M-replica": "127.0.0.1:3",
		"pool-256M-master": "127.0.0.1:4", "pool-256M-replica": "127.0.0.1:5",
		"spare-1": "127.0.0.1:6",
	}
	want := []adminCall{
		{what: "add 64M pair", path: "/v1/admin/pools/64M/pairs", body: map[string]string{"master": "127.0.0.1:2", "replica": "127.0.0.1:3", "dbs": "0-15", "persistence": "aof-everysec"}},
		{what: "add 256M pair", path: "/v1/admin/pools/256M/pairs", body: map[string]string{"master": "127.0.0.1:4", "replica": "127.0.0.1:5", "dbs": "0-15", "persistence": "aof-everysec"}},
		{what: "add spare", path: "/v1/admin/spares", body: map[string]string{"addr": "127.0.0.1:6"}},
	}
	if got := adminCalls(l, addrs); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// TestClusterJSON: cluster.json's fields are what scripts and e2e read.
func TestClusterJSON(t *testing.T) {
	c := devConfig{Dir: "/tmp/dev", APIAddr: "127.0.0.1:8080", ProxyAddr: "127.0.0.1:7379", AdminToken: "ga_admin"}
	in := newClusterInfo(c, "127.0.0.1:6390", demoInfo{Tenant: "t_1", User: "demo", Password: "pw", Token: "gt_demo"},
		newMetricsURLs(c, "127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"))
	want := `{
  "api": "http://127.0.0.1:8080",
  "proxy": "127.0.0.1:7379",
  "admin_token": "ga_admin",
  "metadb": "redis://127.0.0.1:6390",
  "demo": {
    "tenant": "t_1",
    "user": "demo",
    "password": "pw",
    "token": "gt_demo"
  },
  "metrics": {
    "api": "http://127.0.0.1:8080/metrics",
    "proxy": "http://127.0.0.1:9101/metrics",
    "master": "http://127.0.0.1:9102/metrics",
    "keeper": "http://127.0.0.1:9103/metrics"
  }
}`
	if got := string(clusterJSON(in)); got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestPrintWelcome(t *testing.T) {
	in := &clusterInfo{API: "http://127.0.0.1:8080", Proxy: "127.0.0.1:7379", AdminToken: "ga_admin",
		Demo: demoInfo{User: "demo", Password: "pw", Token: "gt_demo"},
		Metrics: metricsURLs{API: "http://127.0.0.1:8080/metrics", Proxy: "http://127.0.0.1:9101/metrics",
			Master: "http://127.0.0.1:9102/metrics", Keeper: "http://127.0.0.1:9103/metrics"}}
	var b strings.Builder
	printWelcome(&b, in, "/tmp/dev")
	lines := map[string]bool{}
	for _, l := range strings.Split(b.String(), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, tc := range []struct{ name, line string }{
		{"first line", "Granary dev cluster is up.  (Ctrl-C stops it; data in /tmp/dev)"},
		{"API", "REST API     http://127.0.0.1:8080"},
		{"proxy", "proxy        127.0.0.1:7379"},
		{"demo credentials", "demo tenant  user demo  password pw"},
		{"token for the curl lines", "export TOKEN=gt_demo"},
		{"redis-cli splits the proxy address", "redis-cli -h 127.0.0.1 -p 7379 --user demo --pass pw -n 0 PING"},
		{"admin call", `curl -s http://127.0.0.1:8080/v1/admin/pools -H "Authorization: Bearer ga_admin"`},
		{"API metrics", "api     http://127.0.0.1:8080/metrics"},
		{"proxy metrics", "proxy   http://127.0.0.1:9101/metrics"},
		{"master metrics", "master  http://127.0.0.1:9102/metrics"},
		{"keeper metrics", "keeper  http://127.0.0.1:9103/metrics"},
		{"cluster.json", "cluster.json: /tmp/dev/cluster.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !lines[tc.line] {
				t.Fatalf("got no line %q in:\n%s", tc.line, b.String())
			}
		})
	}
}

func TestParseDevFlags(t *testing.T) {
	for _, k := range []string{"GRANARY_DIR", "GRANARY_API_ADDR", "GRANARY_PROXY_ADDR", "GRANARY_ADMIN_TOKEN"} {
		t.Setenv(k, "") // restores the variable after the test
		os.Unsetenv(k)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want devConfig // AdminToken "" means a random one
	}{
		{
			name: "defaults",
			want: devConfig{Dir: filepath.Join(wd, ".dev"), APIAddr: "127.0.0.1:8080", ProxyAddr: "127.0.0.1:7379"},
		},
		{
			name: "flags",
			args: []string{"--dir", "/srv/g", "--api-addr", "127.0.0.1:1", "--proxy-addr", "127.0.0.1:2", "--admin-token", "ga_x"},
			want: devConfig{Dir: "/srv/g", APIAddr: "127.0.0.1:1", ProxyAddr: "127.0.0.1:2", AdminToken: "ga_x"},
		},
		{
			name: "environment, a relative folder made absolute",
			env:  map[string]string{"GRANARY_DIR": "d", "GRANARY_API_ADDR": "127.0.0.1:3", "GRANARY_ADMIN_TOKEN": "ga_env"},
			want: devConfig{Dir: filepath.Join(wd, "d"), APIAddr: "127.0.0.1:3", ProxyAddr: "127.0.0.1:7379", AdminToken: "ga_env"},
		},
		{
			name: "a flag beats its variable",
			args: []string{"--proxy-addr", "127.0.0.1:4"},
			env:  map[string]string{"GRANARY_PROXY_ADDR": "127.0.0.1:5"},
			want: devConfig{Dir: filepath.Join(wd, ".dev"), APIAddr: "127.0.0.1:8080", ProxyAddr: "127.0.0.1:4"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			got, err := parseDevFlags(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want.AdminToken == "" {
				if !strings.HasPrefix(got.AdminToken, "ga_") || len(got.AdminToken) != len("ga_")+43 {
					t.Fatalf("got admin token %q, want ga_ and 43 random characters", got.AdminToken)
				}
				got.AdminToken = ""
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// This file is what `granary dev` sets up, with no I/O: the redis-servers
// it runs, the REST calls that give them to the cluster, the cluster.json
// it writes and the text it prints. dev.go carries it out.

// devConfig is what `granary dev` takes.
type devConfig struct {
	Dir        string
	APIAddr    string
	ProxyAddr  string
	AdminToken string
	// HA runs the metadb as a master, a replica and 3 Sentinels.
	HA bool
}

// apiURL is the base URL of the dev cluster's REST API.
func (c devConfig) apiURL() string { return "http://" + c.APIAddr }

// clusterJSONPath is where the dev cluster describes itself while it runs.
func (c devConfig) clusterJSONPath() string { return filepath.Join(c.Dir, "cluster.json") }

// devPool is one pool the dev cluster creates: a pair of 16 dbs.
type devPool struct {
	size      string
	maxmemory string
}

var devPools = []devPool{{"64M", "1gb"}, {"256M", "4gb"}}

// devServer is one redis-server of the dev cluster.
type devServer struct {
	// name names it in the log and its folder under <dir>/redis.
	name string
	// replicaOf is the name of the server it replicates, if any; it starts
	// once that one runs, and the next server once its link is up.
	replicaOf string
	// args are its config directives.
	args []string
	// supervised servers are restarted when they die (the metadb under
	// Sentinel) instead of stopping the dev cluster.
	supervised bool
}

// devPair is one pool's pair, its servers by name.
type devPair struct{ size, master, replica string }

// devLayout is the redis-servers of a dev cluster and what each is for.
type devLayout struct {
	// servers in the order they start.
	servers []devServer
	metadb  string
	// metadbReplica is the metadb's replica, "" without --ha.
	metadbReplica string
	pairs         []devPair
	spare         string
}

// layoutFor lays out a dev cluster with one pair per pool: the metadb
// (append-only), each pool's master and replica, and one spare. Only the
// metadb and the replicas persist, as the design recommends; the pairs
// are added with persistence policy aof-everysec (devPersistence).
func layoutFor(pools []devPool) devLayout {
	persist := []string{"appendonly", "yes", "appendfsync", "everysec"}
	l := devLayout{metadb: "metadb", spare: "spare-1"}
	l.servers = append(l.servers, devServer{name: l.metadb, args: persist})
	for _, pl := range pools {
		args := []string{"maxmemory", pl.maxmemory, "databases", "16"}
		p := devPair{size: pl.size, master: "pool-" + pl.size + "-master", replica: "pool-" + pl.size + "-replica"}
		l.servers = append(l.servers,
			devServer{name: p.master, args: args},
			devServer{name: p.replica, replicaOf: p.master, args: append(append([]string(nil), args...), persist...)})
		l.pairs = append(l.pairs, p)
	}
	l.servers = append(l.servers, devServer{name: l.spare, args: []string{"maxmemory", "4gb", "databases", "16"}})
	return l
}

// withMetadbReplica is l with a replica of the metadb, started right after
// it, and both metadb servers supervised: `granary dev --ha`.
func (l devLayout) withMetadbReplica() devLayout {
	l.metadbReplica = l.metadb + "-replica"
	servers := []devServer{l.servers[0], {name: l.metadbReplica, replicaOf: l.metadb, args: l.servers[0].args}}
	servers[0].supervised, servers[1].supervised = true, true
	l.servers = append(servers, l.servers[1:]...)
	return l
}

// devSentinels is how many Sentinels watch the metadb of `granary dev --ha`,
// and devMetadbName the name they know it by.
const (
	devSentinels  = 3
	devMetadbName = "granary"
)

// devPersistence is the dev pairs' persistence policy: the replicas run
// it, the masters none.
const devPersistence = "aof-everysec"

// adminCall is one admin REST call that sets the dev cluster up.
type adminCall struct {
	// what the call does, for its error.
	what string
	path string
	body map[string]string
}

// adminCalls are the calls that give the running servers (addrs by name)
// to the cluster: each pair to its pool, with all 16 dbs, then the spare.
func adminCalls(l devLayout, addrs map[string]string) []adminCall {
	var calls []adminCall
	for _, p := range l.pairs {
		calls = append(calls, adminCall{what: "add " + p.size + " pair", path: "/v1/admin/pools/" + p.size + "/pairs",
			body: map[string]string{"master": addrs[p.master], "replica": addrs[p.replica], "dbs": "0-15", "persistence": devPersistence}})
	}
	return append(calls, adminCall{what: "add spare", path: "/v1/admin/spares", body: map[string]string{"addr": addrs[l.spare]}})
}

// clusterInfo is written to <dir>/cluster.json once the cluster is ready.
type clusterInfo struct {
	API        string `json:"api"`
	Proxy      string `json:"proxy"`
	AdminToken string `json:"admin_token"`
	Metadb     string `json:"metadb"`
	// MetadbSentinels and MetadbMasterName, with --ha, are how to reach the
	// metadb: through its Sentinels (Metadb is its master at the start).
	MetadbSentinels  []string `json:"metadb_sentinels,omitempty"`
	MetadbMasterName string   `json:"metadb_master_name,omitempty"`
	Demo             demoInfo `json:"demo"`
	// Metrics are the /metrics URLs of the four components.
	Metrics metricsURLs `json:"metrics"`
}

// metricsURLs are where each component of the dev cluster serves /metrics.
type metricsURLs struct {
	API    string `json:"api"`
	Proxy  string `json:"proxy"`
	Master string `json:"master"`
	Keeper string `json:"keeper"`
}

// devMetricsAddr is where the proxy, the master and the keeper of the dev
// cluster serve /metrics: a free loopback port each (the API serves it on
// its own address).
const devMetricsAddr = "127.0.0.1:0"

// newMetricsURLs are the /metrics URLs of c's API and of the proxy, the
// master and the keeper serving /metrics on the given host:port addresses.
func newMetricsURLs(c devConfig, proxy, master, keeper string) metricsURLs {
	u := func(addr string) string { return "http://" + addr + "/metrics" }
	return metricsURLs{API: c.apiURL() + "/metrics", Proxy: u(proxy), Master: u(master), Keeper: u(keeper)}
}

// demoInfo is the demo tenant, as the API's signup answers it.
type demoInfo struct {
	Tenant   string `json:"tenant"`
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
}

// newClusterInfo describes the cluster of c whose metadb listens on
// metadbAddr.
func newClusterInfo(c devConfig, metadbAddr string, demo demoInfo, metrics metricsURLs) *clusterInfo {
	return &clusterInfo{API: c.apiURL(), Proxy: c.ProxyAddr, AdminToken: c.AdminToken, Metadb: "redis://" + metadbAddr,
		Demo: demo, Metrics: metrics}
}

// clusterJSON is the contents of cluster.json.
func clusterJSON(in *clusterInfo) []byte {
	b, _ := json.MarshalIndent(in, "", "  ")
	return b
}

// printWelcome prints how to reach the cluster and what to try first.
func printWelcome(w io.Writer, in *clusterInfo, dir string) {
	fmt.Fprintf(w, `
Granary dev cluster is up.  (Ctrl-C stops it; data in %[7]s)

  REST API     %[1]s
  proxy        %[2]s
  admin token  %[3]s
  demo tenant  user %[4]s  password %[5]s
               token %[6]s

Try it:

  export TOKEN=%[6]s
  curl -s -X POST %[1]s/v1/dbs -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -d '{"size":"64M"}'
  curl -s %[1]s/v1/dbs -H "Authorization: Bearer $TOKEN"
  redis-cli -h %[8]s -p %[9]s --user %[4]s --pass %[5]s -n 0 PING
  curl -s -X DELETE %[1]s/v1/dbs/0 -H "Authorization: Bearer $TOKEN"
  curl -s %[1]s/v1/admin/pools -H "Authorization: Bearer %[3]s"

Sign up another tenant:

  curl -s -X POST %[1]s/v1/tenants -H 'Content-Type: application/json' -d '{"name":"acme"}'

Metrics (Prometheus; dashboard in docs/grafana-dashboard.json):

  api     %[10]s
  proxy   %[11]s
  master  %[12]s
  keeper  %[13]s

cluster.json: %[7]s/cluster.json
`, in.API, in.Proxy, in.AdminToken, in.Demo.User, in.Demo.Password, in.Demo.Token, dir, hostOf(in.Proxy), portOf(in.Proxy),
		in.Metrics.API, in.Metrics.Proxy, in.Metrics.Master, in.Metrics.Keeper)
}

func hostOf(addr string) string { h, _, _ := strings.Cut(addr, ":"); return h }
func portOf(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }

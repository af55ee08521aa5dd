package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/metricshttp"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

type devCluster struct {
	API        string `json:"api"`
	Proxy      string `json:"proxy"`
	AdminToken string `json:"admin_token"`
	Metadb     string `json:"metadb"`
	// With --ha: how to reach the metadb through its Sentinels.
	MetadbSentinels  []string `json:"metadb_sentinels"`
	MetadbMasterName string   `json:"metadb_master_name"`
	Demo             struct {
		User, Password, Token string
	} `json:"demo"`
	// Metrics are the /metrics URLs by component: api, proxy, master, keeper.
	Metrics map[string]string `json:"metrics"`
}

// startDev runs `granary dev` on free ports and waits for its cluster.json.
// A port found free can be taken by another test's server before granary
// dev binds it (the packages' tests run at once): then it exits at once,
// and startDev tries again on other ports.
func startDev(t *testing.T, flags ...string) (*procgroup.Proc, *devCluster, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		apiPort, _ := redisproc.FreePort()
		proxyPort, _ := redisproc.FreePort()
		p, out := startGranaryOutput(t, append([]string{"dev", "--dir", dir,
			"--api-addr", fmt.Sprintf("127.0.0.1:%d", apiPort), "--proxy-addr", fmt.Sprintf("127.0.0.1:%d", proxyPort)}, flags...)...)
		var c devCluster
		ready := false
		redistest.WaitFor(t, 60*time.Second, "cluster.json, or granary dev's exit", func() bool {
			if p.Exited() != nil {
				return true
			}
			b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
			ready = err == nil && json.Unmarshal(b, &c) == nil
			return ready
		})
		if ready {
			return p, &c, dir
		}
		if attempt < 5 && strings.Contains(out.String(), "address already in use") {
			t.Logf("granary dev found a port taken (attempt %d); trying other ports", attempt)
			continue
		}
		t.Fatalf("granary dev exited before it was ready: %v\n%s", p.Exited(), out.String())
	}
}

type apiReply struct {
	status int
	body   map[string]any
	raw    []byte
}

func call(t *testing.T, method, url, token string, body any) apiReply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := apiReply{status: resp.StatusCode, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

// TestDevCluster drives `granary dev` the way its printed curl lines do:
// sign up, create a 64M db, list it, drop it; fills the 64M pool to the
// last slot, then drops everything and gets every slot back; and on SIGINT
// every redis child is gone.
func TestDevCluster(t *testing.T) {
	p, c, _ := startDev(t)

	signup := call(t, "POST", c.API+"/v1/tenants", "", map[string]string{"name": "acme"})
	if signup.status != 201 {
		t.Fatalf("signup: %d %s", signup.status, signup.raw)
	}
	token := signup.body["token"].(string)

	created := call(t, "POST", c.API+"/v1/dbs", token, map[string]string{"size": "64M"})
	if created.status != 201 || created.body["state"] != "active" {
		t.Fatalf("create: %d %s, want 201 and state active", created.status, created.raw)
	}
	// The db answers through the proxy with the credentials from signup.
	url := fmt.Sprintf("redis://acme:%s@%s/%v", signup.body["password"], created.body["endpoint"], created.body["index"])
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	ctx := t.Context()
	if err := rc.Set(ctx, "hello", "world", 0).Err(); err != nil {
		t.Fatalf("SET through the proxy: %v", err)
	}
	if got, err := rc.Get(ctx, "hello").Result(); err != nil || got != "world" {
		t.Fatalf("GET through the proxy: %q, %v; want world", got, err)
	}
	// The printed redis-cli line works.
	host, port, _ := net.SplitHostPort(c.Proxy)
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "--user", c.Demo.User, "--pass", c.Demo.Password,
		"--no-auth-warning", "-n", "0", "PING").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "PONG" {
		t.Fatalf("redis-cli PING: %q, %v", out, err)
	}

	list := call(t, "GET", c.API+"/v1/dbs", token, nil)
	var dbs []map[string]any
	if err := json.Unmarshal(list.raw, &dbs); err != nil || len(dbs) != 1 {
		t.Fatalf("list: %s, want one db", list.raw)
	}

	// The demo tenant and acme share the 64M pool of 16: fill it.
	var mu sync.Mutex
	statuses := map[int]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := call(t, "POST", c.API+"/v1/dbs", c.Demo.Token, map[string]string{"size": "64M"})
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if statuses[201] != 15 || statuses[409] != 5 {
		t.Fatalf("20 creates on 15 free slots: statuses %v, want 15x201 and 5x409", statuses)
	}

	// Drop everything; every slot comes back.
	var jobs []string
	for _, tok := range []string{token, c.Demo.Token} {
		var mine []map[string]any
		_ = json.Unmarshal(call(t, "GET", c.API+"/v1/dbs", tok, nil).raw, &mine)
		for _, db := range mine {
			r := call(t, "DELETE", fmt.Sprintf("%s/v1/dbs/%v", c.API, db["index"]), tok, nil)
			if r.status != 202 {
				t.Fatalf("drop: %d %s", r.status, r.raw)
			}
			jobs = append(jobs, r.body["job"].(string))
		}
	}
	if len(jobs) != 16 {
		t.Fatalf("dropped %d dbs, want 16", len(jobs))
	}
	redistest.WaitFor(t, 30*time.Second, "all 16 slots free again", func() bool {
		r := call(t, "GET", c.API+"/v1/admin/pools", c.AdminToken, nil)
		var pools []struct {
			Size string
			Free int
		}
		_ = json.Unmarshal(r.raw, &pools)
		for _, pl := range pools {
			if pl.Size == "64M" {
				return pl.Free == 16
			}
		}
		return false
	})

	// Every component's /metrics answers with its own metrics.
	for comp, sample := range map[string]string{
		"api":    `granary_api_requests_total{code="201",method="POST",route="/v1/dbs"}`,
		"proxy":  `granary_proxy_ops_total{`,
		"master": `granary_master_is_leader 1`,
		"keeper": `granary_keeper_watched_pairs 2`,
	} {
		url := c.Metrics[comp]
		if !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.HasSuffix(url, "/metrics") {
			t.Fatalf("cluster.json metrics.%s = %q, want a loopback /metrics URL", comp, url)
		}
		redistest.WaitFor(t, 10*time.Second, comp+" metrics with "+sample, func() bool {
			addr := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics")
			return strings.Contains(metricshttp.Scrape(addr), "\n"+sample)
		})
	}

	// Ctrl-C stops everything it started.
	redisPids := childRedis(t, p.Pid())
	if len(redisPids) != 6 {
		t.Fatalf("dev runs %d redis-server children, want 6 (metadb, two pairs, a spare)", len(redisPids))
	}
	// To granary dev alone, not its group: it must stop its children itself.
	if err := syscall.Kill(p.Pid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("granary dev did not exit within 20s of SIGINT")
	}
	for _, pid := range redisPids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Fatalf("redis-server %d still running after granary dev exited", pid)
		}
	}
}

// childRedis lists the pids of the process's direct children (they may
// hang off any thread of the Go process).
func childRedis(t *testing.T, pid int) []int {
	t.Helper()
	var pids []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	seen := map[int]bool{}
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		var n int
		for _, f := range bytes.Fields(b) {
			if _, err := fmt.Sscan(string(f), &n); err == nil && !seen[n] {
				seen[n] = true
				pids = append(pids, n)
			}
		}
	}
	return pids
}

// TestDevHA: `granary dev --ha` runs the metadb as a master, a replica and
// 3 Sentinels, and says so in cluster.json. SIGKILL the metadb master: the
// Sentinels promote the replica, REST changes go on, the dead server comes
// back as a replica, and on SIGINT every redis child (Sentinels included)
// is gone.
func TestDevHA(t *testing.T) {
	p, c, _ := startDev(t, "--ha")
	if len(c.MetadbSentinels) != 3 || c.MetadbMasterName != "granary" {
		t.Fatalf("cluster.json: sentinels %v, master name %q; want 3 and granary", c.MetadbSentinels, c.MetadbMasterName)
	}
	ctx := t.Context()
	master, err := redisproc.SentinelMaster(ctx, c.MetadbSentinels[0], c.MetadbMasterName)
	if err != nil || "redis://"+master != c.Metadb {
		t.Fatalf("the sentinels' master: %q, %v; want %s", master, err, c.Metadb)
	}
	redisPids := childRedis(t, p.Pid())
	if len(redisPids) != 10 {
		t.Fatalf("dev runs %d redis children, want 10 (metadb and its replica, 3 sentinels, two pairs, a spare)", len(redisPids))
	}

	mc := redis.NewClient(&redis.Options{Addr: master})
	defer mc.Close()
	info, err := mc.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			pid, _ = strconv.Atoi(v)
		}
	}
	if !slices.Contains(redisPids, pid) {
		t.Fatalf("metadb master pid %d is not a child of granary dev (%v)", pid, redisPids)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	redistest.WaitFor(t, 30*time.Second, "a signup after the metadb master's death", func() bool {
		return call(t, "POST", c.API+"/v1/tenants", "", map[string]string{"name": "acme"}).status == 201
	})
	t.Logf("REST writes back %v after the metadb master's SIGKILL", time.Since(killed).Round(time.Millisecond))
	if m, err := redisproc.SentinelMaster(ctx, c.MetadbSentinels[0], c.MetadbMasterName); err != nil || m == master {
		t.Fatalf("the sentinels' master after the kill: %q, %v; want another than %s", m, err, master)
	}
	redistest.WaitFor(t, 30*time.Second, "the dead metadb server back as a replica", func() bool {
		info, err := mc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
	})

	redisPids = childRedis(t, p.Pid())
	if err := syscall.Kill(p.Pid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("granary dev did not exit within 20s of SIGINT")
	}
	for _, pid := range redisPids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Fatalf("redis child %d still running after granary dev exited", pid)
		}
	}
}

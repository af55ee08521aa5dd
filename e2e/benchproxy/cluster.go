package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
)

// cluster is everything the benchmark runs against: a metadb, one pair,
// Granary's master, API and proxy, twemproxy in front of the pair master,
// and a tenant with two 64M dbs (one confirmed, one async).
type cluster struct {
	dir      string
	redis    []*redisproc.Proc
	kids     []*procgroup.Proc
	master   string // pair master host:port
	replica  string // pair replica host:port
	pairPids []int  // pair master and replica processes
	api      string // http://host:port
	admin    string // admin token

	proxy      *procgroup.Proc
	proxyAddr  string
	proxyB     *procgroup.Proc // --bin-b's proxy, or nil
	proxyBAddr string
	twem       *procgroup.Proc
	twemAddr   string

	user, password  string
	token           string
	asyncDB, confDB int // tenant db indexes
}

// serverPids are the processes of every server the harness started.
func (c *cluster) serverPids() []int {
	var pids []int
	for _, r := range c.redis {
		pids = append(pids, r.Pid())
	}
	for _, k := range c.kids {
		pids = append(pids, k.Pid())
	}
	return pids
}

// stop ends every process the harness started, newest first.
func (c *cluster) stop() {
	for i := len(c.kids) - 1; i >= 0; i-- {
		c.kids[i].Stop(3 * time.Second)
	}
	for i := len(c.redis) - 1; i >= 0; i-- {
		c.redis[i].Stop(3 * time.Second)
	}
}

// startCluster starts and sets up everything. On error the caller still
// calls stop, which ends whatever had started.
func startCluster(ctx context.Context, c *cluster, o options) error {
	meta, err := c.startRedis(ctx, "metadb", redisproc.Config{})
	if err != nil {
		return err
	}
	pairArgs := []string{"maxmemory", "2gb", "databases", "16"}
	m, err := c.startRedis(ctx, "pair-master", redisproc.Config{Args: pairArgs})
	if err != nil {
		return err
	}
	r, err := c.startRedis(ctx, "pair-replica", redisproc.Config{ReplicaOf: m.Addr, Args: pairArgs})
	if err != nil {
		return err
	}
	if err := redisproc.WaitLinkUp(ctx, r.Addr, 15*time.Second); err != nil {
		return err
	}
	c.master, c.replica = m.Addr, r.Addr
	c.pairPids = []int{m.Pid(), r.Pid()}

	metaURL := "redis://" + meta.Addr
	c.admin = randomHex(16)
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	if c.proxyAddr, err = freeAddr(); err != nil {
		return err
	}
	c.api = "http://" + apiAddr
	env := []string{"GRANARY_ADMIN_TOKEN=" + c.admin, "GRANARY_LOG_LEVEL=info"}
	for _, k := range []struct{ name, cmd string }{{"granary-master", "master"}, {"granary-api", "api"}} {
		args := []string{k.cmd, "--metadb-url", metaURL}
		if k.cmd == "master" {
			args = append(args, "--id", "bench")
		} else {
			args = append(args, "--addr", apiAddr)
		}
		kid, err := startChild(c.dir, k.name, o.bin, env, args...)
		if err != nil {
			return err
		}
		c.kids = append(c.kids, kid)
	}
	proxyArgs := append([]string{"proxy", "--metadb-url", metaURL, "--addr", c.proxyAddr,
		"--gomaxprocs", strconv.Itoa(o.gomaxprocs)}, o.proxyFlags...)
	if c.proxy, err = startChild(c.dir, "granary-proxy", o.bin, env, proxyArgs...); err != nil {
		return err
	}
	c.kids = append(c.kids, c.proxy)
	if err := c.setupREST(ctx, o.readyTimeout); err != nil {
		return err
	}
	if err := c.waitTenantReady(ctx, c.proxyAddr, o.readyTimeout); err != nil {
		return err
	}
	if o.binB != "" {
		// Started once the dbs are placed, so their endpoint is the first
		// proxy; the second serves them all the same.
		if c.proxyBAddr, err = freeAddr(); err != nil {
			return err
		}
		args := append([]string{"proxy", "--metadb-url", metaURL, "--addr", c.proxyBAddr,
			"--gomaxprocs", strconv.Itoa(o.gomaxprocs)}, append(o.proxyFlags, o.proxyBFlags...)...)
		if c.proxyB, err = startChild(c.dir, "granary-proxy-b", o.binB, env, args...); err != nil {
			return err
		}
		c.kids = append(c.kids, c.proxyB)
		if err := c.waitTenantReady(ctx, c.proxyBAddr, o.readyTimeout); err != nil {
			return err
		}
	}
	return c.startTwemproxy(ctx, o.twemConns)
}

func (c *cluster) startRedis(ctx context.Context, name string, cfg redisproc.Config) (*redisproc.Proc, error) {
	cfg.Dir = filepath.Join(c.dir, name)
	p, err := redisproc.Start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start redis %s: %w", name, err)
	}
	c.redis = append(c.redis, p)
	return p, nil
}

// alive is a poll condition that fails at once when a granary child died.
func (c *cluster) alive() error {
	for _, k := range c.kids {
		if err := k.Exited(); err != nil {
			return fatal{err}
		}
	}
	return nil
}

// setupREST adds the pair, signs up the tenant and creates its two dbs
// once the proxy is live, so that the master routes them to it.
func (c *cluster) setupREST(ctx context.Context, timeout time.Duration) error {
	err := poll(ctx, timeout, "api /healthz", func() error {
		if err := c.alive(); err != nil {
			return err
		}
		return c.call(ctx, "GET", "/healthz", "", nil, nil)
	})
	if err != nil {
		return err
	}
	pair := map[string]string{"master": c.master, "replica": c.replica, "dbs": "0-15"}
	if err := c.call(ctx, "POST", "/v1/admin/pools/64M/pairs", c.admin, pair, nil); err != nil {
		return fmt.Errorf("add pair: %w", err)
	}
	err = poll(ctx, timeout, "proxy registered and live in metadb", func() error {
		if err := c.alive(); err != nil {
			return err
		}
		var ms []struct {
			Addr string `json:"addr"`
			Live bool   `json:"live"`
		}
		if err := c.call(ctx, "GET", "/v1/admin/proxies", c.admin, nil, &ms); err != nil {
			return err
		}
		for _, m := range ms {
			if m.Addr == c.proxyAddr && m.Live {
				return nil
			}
		}
		return fmt.Errorf("proxy %s not among %d live proxies", c.proxyAddr, len(ms))
	})
	if err != nil {
		return err
	}
	var t struct{ Token, User, Password string }
	if err := c.call(ctx, "POST", "/v1/tenants", "", map[string]string{"name": "bench"}, &t); err != nil {
		return fmt.Errorf("sign up: %w", err)
	}
	c.token, c.user, c.password = t.Token, t.User, t.Password
	if c.confDB, err = c.createDB(ctx, timeout); err != nil {
		return err
	}
	if c.asyncDB, err = c.createDB(ctx, timeout); err != nil {
		return err
	}
	var db struct {
		WriteMode string `json:"write_mode"`
	}
	path := fmt.Sprintf("/v1/dbs/%d", c.asyncDB)
	if err := c.call(ctx, "PATCH", path, c.token, map[string]string{"write_mode": "async"}, &db); err != nil {
		return fmt.Errorf("patch db %d async: %w", c.asyncDB, err)
	}
	if db.WriteMode != "async" {
		return fmt.Errorf("patch db %d: write_mode is %q", c.asyncDB, db.WriteMode)
	}
	return nil
}

// createDB creates a 64M db and waits until it is active on our proxy.
func (c *cluster) createDB(ctx context.Context, timeout time.Duration) (int, error) {
	type dbView struct {
		Index    int    `json:"index"`
		State    string `json:"state"`
		Endpoint string `json:"endpoint"`
	}
	var db dbView
	if err := c.call(ctx, "POST", "/v1/dbs", c.token, map[string]string{"size": "64M"}, &db); err != nil {
		return 0, fmt.Errorf("create db: %w", err)
	}
	err := poll(ctx, timeout, fmt.Sprintf("db %d active", db.Index), func() error {
		if db.State == "active" && db.Endpoint == c.proxyAddr {
			return nil
		}
		if err := c.alive(); err != nil {
			return err
		}
		err := c.call(ctx, "GET", fmt.Sprintf("/v1/dbs/%d", db.Index), c.token, nil, &db)
		if err == nil {
			err = fmt.Errorf("state %q endpoint %q", db.State, db.Endpoint)
		}
		return err
	})
	return db.Index, err
}

// waitTenantReady waits until both dbs answer through the proxy as the
// tenant would use them (AUTH, SELECT, PING, SET, GET) and the proxy
// reports each db's write mode.
func (c *cluster) waitTenantReady(ctx context.Context, addr string, timeout time.Duration) error {
	for _, d := range []struct {
		index int
		mode  string
	}{{c.confDB, "confirmed"}, {c.asyncDB, "async"}} {
		err := poll(ctx, timeout, fmt.Sprintf("tenant db %d through the proxy", d.index), func() error {
			if err := c.alive(); err != nil {
				return err
			}
			return probe(ctx, addr, func(rc *respConn) error {
				steps := [][]string{{"AUTH", c.user, c.password}, {"SELECT", strconv.Itoa(d.index)},
					{"PING"}, {"SET", "benchproxy:probe", "ok"}}
				for _, s := range steps {
					if _, err := rc.do(s...); err != nil {
						return fmt.Errorf("%s: %w", s[0], err)
					}
				}
				if v, err := rc.str("GET", "benchproxy:probe"); err != nil || v != "ok" {
					return fmt.Errorf("GET after SET: %q, %v", v, err)
				}
				info, err := rc.str("INFO", "granary")
				if err != nil {
					return fmt.Errorf("INFO granary: %w", err)
				}
				if m, _ := infoField(info, "write_mode"); m != d.mode {
					return fmt.Errorf("proxy reports write_mode %q, want %q", m, d.mode)
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// startTwemproxy runs nutcracker as a tuned deployment would: -v 4 (its
// default verbosity costs a getpeername() per request), preconnect, one
// server: the pair master.
func (c *cluster) startTwemproxy(ctx context.Context, conns int) error {
	bin, err := exec.LookPath("nutcracker")
	if err != nil {
		bin = "/usr/sbin/nutcracker"
	}
	if c.twemAddr, err = freeAddr(); err != nil {
		return err
	}
	stats, err := redisproc.FreePort()
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`bench:
  listen: %s
  redis: true
  hash: fnv1a_64
  distribution: ketama
  preconnect: true
  auto_eject_hosts: false
  server_connections: %d
  timeout: 10000
  servers:
   - %s:1
`, c.twemAddr, conns, c.master)
	confPath := filepath.Join(c.dir, "nutcracker.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	if c.twem, err = startChild(c.dir, "nutcracker", bin, nil, "-c", confPath, "-v", "4",
		"-s", strconv.Itoa(stats), "-a", "127.0.0.1"); err != nil {
		return err
	}
	c.kids = append(c.kids, c.twem)
	return poll(ctx, 15*time.Second, "nutcracker", func() error {
		if err := c.twem.Exited(); err != nil {
			return fatal{err}
		}
		return probe(ctx, c.twemAddr, func(rc *respConn) error {
			if _, err := rc.do("SET", "benchproxy:probe", "ok"); err != nil {
				return err
			}
			_, err := rc.do("GET", "benchproxy:probe")
			return err
		})
	})
}

// probe runs f on a fresh connection to addr.
func probe(ctx context.Context, addr string, f func(*respConn) error) error {
	rc, err := dialRESP(ctx, addr)
	if err != nil {
		return err
	}
	defer rc.Close()
	return f(rc)
}

// call sends a JSON request to the API and decodes a 2xx answer into out.
func (c *cluster) call(ctx context.Context, method, path, token string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return apiclient.Call(ctx, method, c.api+path, token, body, out)
}

func freeAddr() (string, error) {
	p, err := redisproc.FreePort()
	return fmt.Sprintf("127.0.0.1:%d", p), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/granary-db/granary/internal/apiclient"
	"github.com/granary-db/granary/internal/redisproc"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

func init() {
	register("dev", "a whole local cluster in one command, for trying Granary", runDev)
}

// devConfig is what `granary dev` takes.
type devConfig struct {
	Dir        string
	APIAddr    string
	ProxyAddr  string
	AdminToken string
}

// clusterInfo is written to <dir>/cluster.json once the cluster is ready.
type clusterInfo struct {
	API        string   `json:"api"`
	Proxy      string   `json:"proxy"`
	AdminToken string   `json:"admin_token"`
	Metadb     string   `json:"metadb"`
	Demo       demoInfo `json:"demo"`
}

type demoInfo struct {
	Tenant   string `json:"tenant"`
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
}

// devPool is one pool the dev cluster creates: a pair of 16 dbs.
type devPool struct {
	size      string
	maxmemory string
}

var devPools = []devPool{{"64M", "1gb"}, {"256M", "4gb"}}

func runDev(ctx context.Context, log zerolog.Logger, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var c devConfig
	fs.StringVar(&c.Dir, "dir", ".dev", "data folder: Redis files, logs and cluster.json")
	fs.StringVar(&c.APIAddr, "api-addr", "127.0.0.1:8080", "REST API listen address")
	fs.StringVar(&c.ProxyAddr, "proxy-addr", "127.0.0.1:7379", "proxy listen address")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin token (env GRANARY_ADMIN_TOKEN); random when empty")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if c.AdminToken == "" {
		c.AdminToken = "ga_" + randomToken()
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = dir
	// A previous run's cluster.json must not be mistaken for this one's.
	_ = os.Remove(filepath.Join(dir, "cluster.json"))

	procs := &procSet{}
	defer procs.stopAll()
	start := func(name string, cfg redisproc.Config) (*redisproc.Proc, error) {
		cfg.Dir = filepath.Join(dir, "redis", name)
		p, err := redisproc.Start(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("start redis %s: %w", name, err)
		}
		procs.add(p)
		log.Info().Str("redis", name).Str("addr", p.Addr).Msg("redis started")
		return p, nil
	}

	meta, err := start("metadb", redisproc.Config{Args: []string{"appendonly", "yes", "appendfsync", "everysec"}})
	if err != nil {
		return err
	}
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr, PoolSize: 64})
	if err != nil {
		return err
	}
	defer store.Close()

	type pairAddrs struct{ size, master, replica string }
	var pairs []pairAddrs
	for _, pl := range devPools {
		args := []string{"maxmemory", pl.maxmemory, "databases", "16"}
		m, err := start("pool-"+pl.size+"-master", redisproc.Config{Args: args})
		if err != nil {
			return err
		}
		// Persistence on the replica only, as the design recommends.
		r, err := start("pool-"+pl.size+"-replica", redisproc.Config{ReplicaOf: m.Addr,
			Args: append(args, "appendonly", "yes", "appendfsync", "everysec")})
		if err != nil {
			return err
		}
		if err := redisproc.WaitLinkUp(ctx, r.Addr, 10*time.Second); err != nil {
			return err
		}
		pairs = append(pairs, pairAddrs{pl.size, m.Addr, r.Addr})
	}
	spare, err := start("spare-1", redisproc.Config{Args: []string{"maxmemory", "4gb", "databases", "16"}})
	if err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	comps, err := devComponents(c, store, log)
	if err != nil {
		return err
	}
	for _, run := range comps {
		g.Go(func() error { return run(gctx) })
	}

	api := "http://" + c.APIAddr
	setup := func() (*clusterInfo, error) {
		if err := waitHTTP(gctx, api+"/healthz"); err != nil {
			return nil, err
		}
		for _, p := range pairs {
			body := map[string]string{"master": p.master, "replica": p.replica, "dbs": "0-15"}
			if err := apiclient.Call(gctx, "POST", api+"/v1/admin/pools/"+p.size+"/pairs", c.AdminToken, body, nil); err != nil {
				return nil, fmt.Errorf("add %s pair: %w", p.size, err)
			}
		}
		if err := apiclient.Call(gctx, "POST", api+"/v1/admin/spares", c.AdminToken, map[string]string{"addr": spare.Addr}, nil); err != nil {
			return nil, fmt.Errorf("add spare: %w", err)
		}
		var demo struct{ Tenant, Token, User, Password string }
		if err := apiclient.Call(gctx, "POST", api+"/v1/tenants", "", map[string]string{"name": "demo"}, &demo); err != nil {
			return nil, fmt.Errorf("create demo tenant: %w", err)
		}
		info := &clusterInfo{API: api, Proxy: c.ProxyAddr, AdminToken: c.AdminToken, Metadb: "redis://" + meta.Addr,
			Demo: demoInfo{Tenant: demo.Tenant, User: demo.User, Password: demo.Password, Token: demo.Token}}
		b, _ := json.MarshalIndent(info, "", "  ")
		tmp := filepath.Join(dir, "cluster.json.tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return nil, err
		}
		return info, os.Rename(tmp, filepath.Join(dir, "cluster.json"))
	}
	g.Go(func() error {
		info, err := setup()
		if err != nil {
			return err
		}
		printWelcome(os.Stdout, info, dir)
		// Any redis child that dies takes the dev cluster down: better a clear
		// stop than a half-working cluster.
		return procs.watch(gctx)
	})
	err = g.Wait()
	// cluster.json describes a running cluster only.
	_ = os.Remove(filepath.Join(dir, "cluster.json"))
	if ctx.Err() != nil {
		log.Info().Msg("stopping")
		return nil
	}
	return err
}

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

cluster.json: %[7]s/cluster.json
`, in.API, in.Proxy, in.AdminToken, in.Demo.User, in.Demo.Password, in.Demo.Token, dir, hostOf(in.Proxy), portOf(in.Proxy))
}

func hostOf(addr string) string { h, _, _ := strings.Cut(addr, ":"); return h }
func portOf(addr string) string { _, p, _ := strings.Cut(addr, ":"); return p }

// procSet tracks the redis children so that every exit path stops them.
type procSet struct {
	mu    sync.Mutex
	procs []*redisproc.Proc
}

func (s *procSet) add(p *redisproc.Proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
}

func (s *procSet) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].Stop(5 * time.Second)
	}
	s.procs = nil
}

// watch returns an error when a child exits before ctx ends.
func (s *procSet) watch(ctx context.Context) error {
	s.mu.Lock()
	procs := append([]*redisproc.Proc(nil), s.procs...)
	s.mu.Unlock()
	died := make(chan *redisproc.Proc, len(procs))
	for _, p := range procs {
		go func() {
			select {
			case <-p.Done():
				died <- p
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case p := <-died:
		return fmt.Errorf("redis %s exited", p.Addr)
	}
}

func waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-t.C:
		}
	}
}

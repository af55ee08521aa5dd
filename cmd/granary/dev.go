package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
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

// runDev starts a whole cluster on this machine: redis-server children
// laid out by layoutFor, the four components in this process, a demo
// tenant. It writes cluster.json and prints how to connect once the cluster
// is ready, and runs until ctx ends (nil) or a child or a component stops
// (its error); every redis child it started is stopped when it returns.
func runDev(ctx context.Context, log zerolog.Logger, args []string) error {
	c, err := parseDevFlags(args)
	if err != nil {
		return err
	}
	// A previous run's cluster.json must not be mistaken for this one's.
	_ = os.Remove(c.clusterJSONPath())

	procs := &procSet{}
	defer procs.stopAll()
	l := layoutFor(devPools)
	if c.HA {
		l = l.withMetadbReplica()
	}
	addrs, err := startServers(ctx, log, c.Dir, l.servers, procs)
	if err != nil {
		return err
	}
	mcfg := metadb.Config{URL: "redis://" + addrs[l.metadb], PoolSize: 64}
	var sentinels []string
	if c.HA {
		if sentinels, err = startSentinels(ctx, log, c.Dir, addrs[l.metadb], procs); err != nil {
			return err
		}
		mcfg.Sentinels, mcfg.MasterName, mcfg.Replicas = sentinels, devMetadbName, 1
	}
	store, err := metadb.Open(mcfg)
	if err != nil {
		return err
	}
	defer store.Close()
	comps, err := devComponents(c, store, log)
	if err != nil {
		return err
	}
	err = serveDev(ctx, log, c, comps, l, addrs, sentinels, procs)
	// cluster.json describes a running cluster only.
	_ = os.Remove(c.clusterJSONPath())
	if ctx.Err() != nil {
		log.Info().Msg("stopping")
		return nil
	}
	return err
}

// parseDevFlags reads `granary dev`'s flags and their GRANARY_*
// variables. The admin token is random when not given; the folder is made
// absolute, as the printed text and cluster.json show it.
func parseDevFlags(args []string) (devConfig, error) {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	var c devConfig
	fs.StringVar(&c.Dir, "dir", ".dev", "data folder: Redis files, logs and cluster.json")
	fs.StringVar(&c.APIAddr, "api-addr", "127.0.0.1:8080", "REST API listen address")
	fs.StringVar(&c.ProxyAddr, "proxy-addr", "127.0.0.1:7379", "proxy listen address")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin token (env GRANARY_ADMIN_TOKEN); random when empty")
	fs.BoolVar(&c.HA, "ha", false, "run the metadb as a master, a replica and 3 Sentinels, and restart a metadb server that dies as a replica")
	if err := parseFlags(fs, args); err != nil {
		return devConfig{}, err
	}
	if c.AdminToken == "" {
		c.AdminToken = "ga_" + randomToken()
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return devConfig{}, err
	}
	c.Dir = dir
	return c, nil
}

// startServers starts the servers in order, each in <dir>/redis/<name>,
// and adds them to procs; a replica is in step with its master before the
// next one starts. It returns their addresses by name.
func startServers(ctx context.Context, log zerolog.Logger, dir string, servers []devServer, procs *procSet) (map[string]string, error) {
	addrs := map[string]string{}
	for _, s := range servers {
		cfg := redisproc.Config{Dir: filepath.Join(dir, "redis", s.name), Args: s.args}
		if s.replicaOf != "" {
			cfg.ReplicaOf = addrs[s.replicaOf]
		}
		p, err := redisproc.Start(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("start redis %s: %w", s.name, err)
		}
		if s.supervised {
			procs.addSupervised(p, s.args)
		} else {
			procs.add(p)
		}
		log.Info().Str("redis", s.name).Str("addr", p.Addr).Msg("redis started")
		addrs[s.name] = p.Addr
		if s.replicaOf != "" {
			if err := redisproc.WaitLinkUp(ctx, p.Addr, 10*time.Second); err != nil {
				return nil, err
			}
		}
	}
	return addrs, nil
}

// serveDev runs the components until ctx ends or one of them, or a redis
// child, stops. Meanwhile, once the API answers, it sets the cluster up,
// writes cluster.json and prints how to connect.
func serveDev(ctx context.Context, log zerolog.Logger, c devConfig, comps *devParts, l devLayout, addrs map[string]string, sentinels []string, procs *procSet) error {
	g, gctx := errgroup.WithContext(ctx)
	if len(sentinels) > 0 {
		g.Go(func() error { return procs.supervise(gctx, log, sentinels) })
	}
	for _, run := range comps.runs {
		g.Go(func() error { return run(gctx) })
	}
	g.Go(func() error {
		demo, err := setupCluster(gctx, c, adminCalls(l, addrs))
		if err != nil {
			return err
		}
		mctx, cancel := context.WithTimeout(gctx, 15*time.Second)
		metrics, err := comps.metrics(mctx)
		cancel()
		if err != nil {
			return err
		}
		info := newClusterInfo(c, addrs[l.metadb], demo, metrics)
		if len(sentinels) > 0 {
			info.MetadbSentinels, info.MetadbMasterName = sentinels, devMetadbName
		}
		if err := writeClusterJSON(c.clusterJSONPath(), info); err != nil {
			return err
		}
		printWelcome(os.Stdout, info, c.Dir)
		// Any redis child that dies takes the dev cluster down: better a clear
		// stop than a half-working cluster.
		return procs.watch(gctx)
	})
	return g.Wait()
}

// setupCluster waits for the API, makes the admin calls and signs up the
// demo tenant.
func setupCluster(ctx context.Context, c devConfig, calls []adminCall) (demoInfo, error) {
	api := c.apiURL()
	if err := waitHTTP(ctx, api+"/healthz"); err != nil {
		return demoInfo{}, err
	}
	for _, call := range calls {
		if err := apiclient.Call(ctx, "POST", api+call.path, c.AdminToken, call.body, nil); err != nil {
			return demoInfo{}, fmt.Errorf("%s: %w", call.what, err)
		}
	}
	var demo demoInfo
	if err := apiclient.Call(ctx, "POST", api+"/v1/tenants", "", map[string]string{"name": "demo"}, &demo); err != nil {
		return demoInfo{}, fmt.Errorf("create demo tenant: %w", err)
	}
	return demo, nil
}

// writeClusterJSON writes path whole or not at all: a reader polling for
// it never sees half a file.
func writeClusterJSON(path string, info *clusterInfo) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, clusterJSON(info), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// procSet tracks the redis children so that every exit path stops them.
// The supervised ones (the metadb under Sentinel) are not watched:
// supervise restarts them instead.
type procSet struct {
	mu         sync.Mutex
	procs      []*redisproc.Proc
	supervised map[*redisproc.Proc][]string // their config directives
}

func (s *procSet) addSupervised(p *redisproc.Proc, args []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.supervised == nil {
		s.supervised = map[*redisproc.Proc][]string{}
	}
	s.supervised[p] = args
	s.procs = append(s.procs, p)
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
	var procs []*redisproc.Proc
	for _, p := range s.procs {
		if _, ok := s.supervised[p]; !ok {
			procs = append(procs, p)
		}
	}
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

// startSentinels starts devSentinels Sentinels watching the metadb master
// at master, adds them to procs and waits until they know each other and
// the metadb's replica. It returns their addresses.
func startSentinels(ctx context.Context, log zerolog.Logger, dir, master string, procs *procSet) ([]string, error) {
	var addrs []string
	for i := 1; i <= devSentinels; i++ {
		p, err := redisproc.StartSentinel(ctx, redisproc.SentinelConfig{Dir: filepath.Join(dir, "redis", fmt.Sprintf("sentinel-%d", i)),
			MasterName: devMetadbName, Master: master, Quorum: devSentinels/2 + 1, DownAfter: redisproc.StaggeredDownAfter(i - 1)})
		if err != nil {
			return nil, fmt.Errorf("start sentinel %d: %w", i, err)
		}
		procs.add(p)
		log.Info().Str("sentinel", fmt.Sprint(i)).Str("addr", p.Addr).Msg("redis sentinel started")
		addrs = append(addrs, p.Addr)
	}
	return addrs, redisproc.WaitSentinels(ctx, addrs, devMetadbName, 1, 30*time.Second)
}

// supervise restarts each supervised metadb server that dies, on its
// port, as a replica of the master the Sentinels promote instead, so the
// metadb has a replica again (the writes need its confirmation) and can
// fail over again. It returns nil when ctx ends.
func (s *procSet) supervise(ctx context.Context, log zerolog.Logger, sentinels []string) error {
	died := make(chan *redisproc.Proc)
	watch := func(p *redisproc.Proc) {
		go func() {
			select {
			case <-p.Done():
				select {
				case died <- p:
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}()
	}
	s.mu.Lock()
	for p := range s.supervised {
		watch(p)
	}
	s.mu.Unlock()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var p *redisproc.Proc
		select {
		case <-ctx.Done():
			return nil
		case p = <-died:
		}
		log.Warn().Str("addr", p.Addr).Msg("metadb server died; restarting it as a replica once another is master")
		for {
			m, err := sentinelMaster(ctx, sentinels)
			if err == nil && m != p.Addr {
				s.mu.Lock()
				args := s.supervised[p]
				s.mu.Unlock()
				np, err := redisproc.Start(ctx, redisproc.Config{Dir: p.Dir, Port: p.Port, ReplicaOf: m, Args: args})
				if err == nil {
					s.mu.Lock()
					delete(s.supervised, p)
					s.supervised[np] = args
					s.procs = append(s.procs, np)
					s.mu.Unlock()
					log.Info().Str("addr", np.Addr).Str("master", m).Msg("metadb server restarted as a replica")
					watch(np)
					break
				}
				log.Warn().Err(err).Str("addr", p.Addr).Msg("metadb server restart failed")
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}
}

// sentinelMaster is the metadb master as the first Sentinel that answers
// names it.
func sentinelMaster(ctx context.Context, sentinels []string) (string, error) {
	var last error
	for _, a := range sentinels {
		m, err := redisproc.SentinelMaster(ctx, a, devMetadbName)
		if err == nil {
			return m, nil
		}
		last = err
	}
	return "", last
}

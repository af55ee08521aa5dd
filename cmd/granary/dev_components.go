package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/keeper"
	"github.com/granary-db/granary/master"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proxy"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

// devParts are the in-process components of `granary dev`.
type devParts struct {
	// runs each run one component until ctx ends.
	runs []func(context.Context) error
	// metrics waits (within ctx) until the proxy, the master and the keeper
	// listen for /metrics and returns every component's /metrics URL.
	metrics func(ctx context.Context) (metricsURLs, error)
}

// devComponents builds the in-process components of `granary dev`: one
// master, one API, one proxy and one keeper, each with /metrics.
func devComponents(c devConfig, store *metadb.Store, log zerolog.Logger) (*devParts, error) {
	objs, err := objstore.NewLocal(filepath.Join(c.Dir, "store"))
	if err != nil {
		return nil, err
	}
	mcfg := master.DefaultConfig()
	mcfg.ID = "dev"
	mcfg.MetricsAddr = devMetricsAddr
	mcfg.Usage.WebhookDeny = []string{c.APIAddr, c.ProxyAddr}
	m, err := master.New(mcfg, store, log.With().Str("component", "master").Logger())
	if err != nil {
		return nil, err
	}
	acfg := tenantapi.DefaultConfig()
	acfg.Addr = c.APIAddr
	acfg.AdminToken = c.AdminToken
	acfg.ID = "dev"
	acfg.Store = objs
	acfg.ImportAllow = "127.0.0.0/8" // a dev cluster may import from a local Redis; its own servers stay denied
	api, err := tenantapi.New(acfg, store, log.With().Str("component", "api").Logger())
	if err != nil {
		return nil, err
	}
	pcfg := proxy.DefaultConfig()
	pcfg.Addr = c.ProxyAddr
	pcfg.ID = "dev"
	pcfg.MetricsAddr = devMetricsAddr
	px, err := proxy.New(pcfg, store, log.With().Str("component", "proxy").Logger())
	if err != nil {
		return nil, err
	}
	kcfg := keeper.DefaultConfig()
	kcfg.ID = "dev"
	kcfg.Store = objs
	kcfg.ImportAllow = acfg.ImportAllow
	kcfg.MetricsAddr = devMetricsAddr
	k, err := keeper.New(kcfg, store, log.With().Str("component", "keeper").Logger())
	if err != nil {
		return nil, err
	}
	metrics := func(ctx context.Context) (metricsURLs, error) {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if pa, ma, ka := px.MetricsAddr(), m.MetricsAddr(), k.MetricsAddr(); pa != "" && ma != "" && ka != "" {
				return newMetricsURLs(c, pa, ma, ka), nil
			}
			select {
			case <-ctx.Done():
				return metricsURLs{}, fmt.Errorf("metrics listeners: %w", ctx.Err())
			case <-t.C:
			}
		}
	}
	return &devParts{runs: []func(context.Context) error{m.Run, api.Run, px.Run, k.Run}, metrics: metrics}, nil
}

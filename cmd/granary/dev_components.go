package main

import (
	"context"

	"github.com/granary-db/granary/keeper"
	"github.com/granary-db/granary/master"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proxy"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

// devComponents builds the in-process components of `granary dev`: one
// master, one API, one proxy and one keeper. Each returned function runs
// one until ctx ends.
func devComponents(c devConfig, store *metadb.Store, log zerolog.Logger) ([]func(context.Context) error, error) {
	mcfg := master.DefaultConfig()
	mcfg.ID = "dev"
	m, err := master.New(mcfg, store, log.With().Str("component", "master").Logger())
	if err != nil {
		return nil, err
	}
	acfg := tenantapi.DefaultConfig()
	acfg.Addr = c.APIAddr
	acfg.AdminToken = c.AdminToken
	acfg.ID = "dev"
	api, err := tenantapi.New(acfg, store, log.With().Str("component", "api").Logger())
	if err != nil {
		return nil, err
	}
	pcfg := proxy.DefaultConfig()
	pcfg.Addr = c.ProxyAddr
	pcfg.ID = "dev"
	px, err := proxy.New(pcfg, store, log.With().Str("component", "proxy").Logger())
	if err != nil {
		return nil, err
	}
	kcfg := keeper.DefaultConfig()
	kcfg.ID = "dev"
	k, err := keeper.New(kcfg, store, log.With().Str("component", "keeper").Logger())
	if err != nil {
		return nil, err
	}
	return []func(context.Context) error{m.Run, api.Run, px.Run, k.Run}, nil
}

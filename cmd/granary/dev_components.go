package main

import (
	"context"

	"github.com/granary-db/granary/master"
	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

// devComponents builds the in-process components of `granary dev`; each
// returned function runs one until ctx ends.
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
	return []func(context.Context) error{m.Run, api.Run}, nil
}

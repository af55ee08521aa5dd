package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/metadb"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

func init() { register("api", "REST API for tenants and admins", runAPI) }

// runAPI serves the REST API until ctx ends.
func runAPI(ctx context.Context, log zerolog.Logger, args []string) error {
	cfg := tenantapi.DefaultConfig()
	if host, err := os.Hostname(); err == nil && host != "" {
		cfg.ID = host
	}
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	mcfg := metadbFlags(fs)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address host:port")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "admin bearer token (required; better given as GRANARY_ADMIN_TOKEN)")
	fs.DurationVar(&cfg.CreateWait, "create-wait", cfg.CreateWait, "how long POST /v1/dbs waits for the db to be ready")
	fs.IntVar(&cfg.MaxDBsPerTenant, "max-dbs-per-tenant", cfg.MaxDBsPerTenant, "most dbs one tenant may hold")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest request body accepted")
	fs.StringVar(&cfg.ID, "id", cfg.ID, "this server's id on the bus, sender api/<id>")
	fs.DurationVar(&cfg.KeyReportGap, "key-report-gap", cfg.KeyReportGap, "least time between two big-key scans of one db")
	listFlag(fs, "webhook-allow", "CIDR prefixes an alert webhook's IP literal may name although not public unicast (match the master's)", &cfg.WebhookAllow)
	fs.StringVar(&cfg.ImportAllow, "import-allow", "", "private address prefixes (CIDR, comma-separated) import sources may be on, e.g. 10.0.0.0/8")
	storeSpec := fs.String("store", "", "where exports and uploaded RDB files are kept, dir:/path or s3://bucket/prefix?endpoint=host:port (credentials from GRANARY_S3_ACCESS_KEY/GRANARY_S3_SECRET_KEY or AWS_*; default: exports and restores disabled)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.AdminToken == "" {
		return errors.New("api: --admin-token or GRANARY_ADMIN_TOKEN is required")
	}
	if *storeSpec != "" {
		objs, err := objstore.Open(*storeSpec)
		if err != nil {
			return err
		}
		cfg.Store = objs
	}
	store, err := metadb.Open(*mcfg)
	if err != nil {
		return err
	}
	defer store.Close()
	srv, err := tenantapi.New(cfg, store, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

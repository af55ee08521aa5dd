package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proxy"
	"github.com/rs/zerolog"
)

func init() { register("proxy", "RESP endpoint for tenants", runProxy) }

// runProxy runs a proxy until ctx ends, which main makes SIGINT and SIGTERM
// do: the proxy then drains (see proxy.Proxy.Serve) and returns.
func runProxy(ctx context.Context, log zerolog.Logger, args []string) error {
	cfg := proxy.DefaultConfig()
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	mcfg := metadbFlags(fs)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "RESP listen address")
	fs.StringVar(&cfg.ID, "id", "", "proxy id in metadb (default hostname-port)")
	fs.StringVar(&cfg.Advertise, "advertise", "", "address tenants are given (default: --addr)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (default off)")
	fs.IntVar(&cfg.MaxClients, "max-clients", cfg.MaxClients, "maximum tenant connections")
	fs.Int64Var(&cfg.DefaultMaxConnections, "default-max-connections", cfg.DefaultMaxConnections, "a tenant's connections to this proxy when the admin set no limit")
	fs.Int64Var(&cfg.DefaultOpsPerSec, "default-ops-per-sec", cfg.DefaultOpsPerSec, "commands per second per tenant db on this proxy when the admin set no limit (0: none)")
	fs.DurationVar(&cfg.RateBurst, "rate-burst", cfg.RateBurst, "how many seconds' worth of its ops/s limit a db may spend at once (at least 50ms)")
	fs.Int64Var(&cfg.MaxMultibulk, "max-multibulk", cfg.MaxMultibulk, "maximum elements in one request")
	fs.Int64Var(&cfg.MaxBulk, "max-bulk", cfg.MaxBulk, "maximum bytes in one argument")
	fs.Int64Var(&cfg.MaxOutput, "max-output", cfg.MaxOutput, "maximum pending reply bytes per connection")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", cfg.IdleTimeout, "close connections idle this long (0: never)")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", cfg.WriteTimeout, "bound on writing replies to a client")
	fs.IntVar(&cfg.MaxBatch, "max-batch", cfg.MaxBatch, "pipelined requests dispatched per client before replying")
	fs.IntVar(&cfg.BackendConns, "backend-conns", cfg.BackendConns, "shared pipelined connections per backend server and db")
	fs.StringVar(&cfg.BackendPassword, "backend-password", "", "password of the backends' default user")
	fs.StringVar(&cfg.TenantUser, "tenant-user", cfg.TenantUser, "restricted backend ACL user for tenant commands")
	fs.StringVar(&cfg.ScriptUser, "script-user", cfg.ScriptUser, "restricted backend ACL user for scripts and transactions")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", cfg.DialTimeout, "backend dial timeout")
	fs.DurationVar(&cfg.BackendTimeout, "backend-timeout", cfg.BackendTimeout, "backend reply timeout")
	fs.DurationVar(&cfg.ConfirmTimeout, "confirm-timeout", cfg.ConfirmTimeout, "how long a confirmed write waits for the replica")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "lease in metadb")
	fs.DurationVar(&cfg.LeaseMargin, "lease-margin", cfg.LeaseMargin, "self-fencing safety margin")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", cfg.HeartbeatInterval, "lease renewal interval")
	fs.DurationVar(&cfg.ActivityInterval, "activity-interval", cfg.ActivityInterval, "how often written dbs are reported, so growing dbs get measured")
	fs.IntVar(&cfg.MaxHeld, "max-held", cfg.MaxHeld, "maximum writes waiting on one db's resize hold")
	fs.DurationVar(&cfg.MaxHoldWait, "max-hold-wait", cfg.MaxHoldWait, "bound on a hold without a deadline")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", cfg.DrainTimeout, "bound on the drain at SIGTERM: commands already read get this long to finish")
	fs.IntVar(&cfg.HotKeySample, "hot-key-sample", cfg.HotKeySample, "sample one keyed command in this many, on average, for the hot-key report (0: off)")
	fs.DurationVar(&cfg.HotKeyInterval, "hot-key-interval", cfg.HotKeyInterval, "how often each db's hot keys are published to metadb")
	fs.DurationVar(&cfg.HotKeyWindow, "hot-key-window", cfg.HotKeyWindow, "decay time constant of the hot-key counts")
	fs.IntVar(&cfg.HotKeyDBs, "hot-key-dbs", cfg.HotKeyDBs, "most dbs with a hot-key summary at a time")
	procs := fs.Int("gomaxprocs", 0, "GOMAXPROCS (0: Go's default; 1 is fastest when the proxy shares 2 cores with Redis)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	store, err := metadb.Open(*mcfg)
	if err != nil {
		return err
	}
	defer store.Close()
	p, err := proxy.New(cfg, store, log)
	if err != nil {
		return fmt.Errorf("proxy config: %w", err)
	}
	return p.Run(ctx)
}

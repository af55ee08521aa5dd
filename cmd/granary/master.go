package main

import (
	"context"
	"flag"
	"strings"

	"github.com/granary-db/granary/master"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

func init() {
	register("master", "the controller (several may run; one leads)", runMaster)
}

// metadbFlags are every component's metadb flags.
func metadbFlags(fs *flag.FlagSet) *metadb.Config {
	c := metadb.DefaultConfig()
	fs.StringVar(&c.URL, "metadb-url", c.URL, "metadb Redis URL (with --metadb-sentinels only its db number and credentials count)")
	fs.IntVar(&c.Replicas, "metadb-replicas", c.Replicas, "metadb replicas that must confirm each write (WAIT); 0 disables")
	listFlag(fs, "metadb-sentinels", "host:port of the Redis Sentinels that watch the metadb, comma-separated: the metadb master is found through them and followed across failovers", &c.Sentinels)
	fs.StringVar(&c.MasterName, "metadb-master-name", c.MasterName, "the name the Sentinels monitor the metadb under")
	return &c
}

// listFlag is a flag that appends its comma-separated values to dst.
func listFlag(fs *flag.FlagSet, name, usage string, dst *[]string) {
	fs.Func(name, usage, func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*dst = append(*dst, s)
			}
		}
		return nil
	})
}

func runMaster(ctx context.Context, log zerolog.Logger, args []string) error {
	fs := flag.NewFlagSet("master", flag.ContinueOnError)
	mc := metadbFlags(fs)
	cfg := master.DefaultConfig()
	fs.StringVar(&cfg.ID, "id", cfg.ID, "master id in the leader lease")
	fs.DurationVar(&cfg.LeaseTTL, "lease", cfg.LeaseTTL, "leader lease time; a standby takes over within it")
	fs.DurationVar(&cfg.BackendTimeout, "backend-timeout", cfg.BackendTimeout, "timeout of each command sent to a pair's Redis")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (default off)")
	fs.DurationVar(&cfg.DegradeAfter, "degrade-after", cfg.DegradeAfter, "how long a pair may go without a replica after a failover before its confirmed dbs' writes are acknowledged without one (shown to the tenants); negative: never")
	listFlag(fs, "webhook-allow", "CIDR prefixes alert webhooks may reach although not public unicast, comma-separated, repeatable (e.g. 10.20.0.0/16)", &cfg.Usage.WebhookAllow)
	listFlag(fs, "webhook-deny", "host:port addresses alert webhooks must never reach (say the APIs), comma-separated, repeatable; metadb, pairs, spares, proxies and keepers are always denied", &cfg.Usage.WebhookDeny)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return runOn(ctx, mc, func(s *metadb.Store) (*master.Master, error) { return master.New(cfg, s, log) })
}

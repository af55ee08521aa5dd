package main

import (
	"context"
	"flag"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/keeper"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

func init() {
	register("keeper", "agent beside the Redis servers: health, sizing", runKeeper)
}

func runKeeper(ctx context.Context, log zerolog.Logger, args []string) error {
	fs := flag.NewFlagSet("keeper", flag.ContinueOnError)
	mc := metadbFlags(fs)
	cfg := keeper.DefaultConfig()
	fs.StringVar(&cfg.ID, "id", cfg.ID, "keeper id in its lease and in the pairs assigned to it")
	fs.DurationVar(&cfg.LeaseTTL, "lease", cfg.LeaseTTL, "keeper lease time; its pairs move to another keeper within it after a crash")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (default off)")
	fs.DurationVar(&cfg.PairsPoll, "pairs-poll", cfg.PairsPoll, "how often to read which pairs are assigned to this keeper")
	fs.DurationVar(&cfg.ProbeInterval, "probe-interval", cfg.ProbeInterval, "how often each watched server gets PING and INFO")
	fs.DurationVar(&cfg.ProbeTimeout, "probe-timeout", cfg.ProbeTimeout, "a probe slower than this counts as the server being down")
	fs.DurationVar(&cfg.DetectTime, "detect-time", cfg.DetectTime, "a pair's master unreachable this long (and lost by its replica too) is failed over")
	fs.DurationVar(&cfg.ReportInterval, "report-interval", cfg.ReportInterval, "a pair's health report is rewritten at least this often")
	fs.DurationVar(&cfg.SizingSweep, "sizing-sweep", cfg.SizingSweep, "every db on this keeper's pairs is measured at least this often")
	fs.DurationVar(&cfg.MeasureGap, "measure-gap", cfg.MeasureGap, "shortest time between two measurements of one db")
	fs.IntVar(&cfg.MeasureWorkers, "measure-workers", cfg.MeasureWorkers, "dbs measured at once")
	fs.DurationVar(&cfg.MeasureTimeout, "measure-timeout", cfg.MeasureTimeout, "bound of one measurement")
	fs.DurationVar(&cfg.Recalibrate, "recalibrate", cfg.Recalibrate, "measure each db exactly (every key) this often from the sweep; negative disables")
	fs.Int64Var(&cfg.ExactKeys, "exact-keys", cfg.ExactKeys, "dbs with at most this many keys are always measured exactly; negative: only recalibration is exact")
	fs.Int64Var(&cfg.SampleKeys, "sample-keys", cfg.SampleKeys, "pilot sample of a sampled measurement")
	fs.Int64Var(&cfg.MaxSampleKeys, "max-sample-keys", cfg.MaxSampleKeys, "most keys a sampled measurement reads")
	fs.Float64Var(&cfg.TargetError, "target-error", cfg.TargetError, "relative half-width of the 95% interval a sampled measurement aims at")
	fs.IntVar(&cfg.ElementSamples, "element-samples", cfg.ElementSamples, "MEMORY USAGE SAMPLES in sampled measurements; negative: every element")
	fs.IntVar(&cfg.ScanBatch, "scan-batch", cfg.ScanBatch, "SCAN COUNT, keys per round trip when measuring")
	fs.IntVar(&cfg.BigKeys, "big-keys", cfg.BigKeys, "largest keys of a db measured every time instead of sampled")
	fs.Float64Var(&cfg.BigKeyFactor, "big-key-factor", cfg.BigKeyFactor, "times the mean key size a key must be to count as big")
	fs.DurationVar(&cfg.KeyReportPoll, "key-report-poll", cfg.KeyReportPoll, "how often requested key reports are looked for")
	fs.IntVar(&cfg.KeyReportWorkers, "key-report-workers", cfg.KeyReportWorkers, "key reports run at once")
	fs.IntVar(&cfg.KeyReportBatch, "key-report-batch", cfg.KeyReportBatch, "SCAN COUNT of a key report, keys per round trip")
	fs.Int64Var(&cfg.KeyReportMaxKeys, "key-report-max-keys", cfg.KeyReportMaxKeys, "a key report stops, partial, after scanning this many keys")
	fs.DurationVar(&cfg.KeyReportMaxTime, "key-report-max-time", cfg.KeyReportMaxTime, "a key report stops, partial, after this long")
	fs.StringVar(&cfg.ImportAllow, "import-allow", "", "private address prefixes (CIDR, comma-separated) import sources may be on, e.g. 10.0.0.0/8")
	fs.StringVar(&cfg.RedisServer, "redis-server", cfg.RedisServer, "redis-server binary a restore's scratch server runs")
	storeSpec := fs.String("store", "", "where exports and uploaded RDB files are kept, dir:/path or s3://bucket/prefix?endpoint=host:port (credentials from GRANARY_S3_ACCESS_KEY/GRANARY_S3_SECRET_KEY or AWS_*; default: export and restore jobs disabled)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *storeSpec != "" {
		objs, err := objstore.Open(*storeSpec)
		if err != nil {
			return err
		}
		cfg.Store = objs
	}
	return runOn(ctx, mc, func(s *metadb.Store) (*keeper.Keeper, error) { return keeper.New(cfg, s, log) })
}

// runOn opens metadb as mc says, builds a component on it with build and
// runs it until ctx ends; the store is closed once Run has returned.
func runOn[C interface{ Run(context.Context) error }](ctx context.Context, mc *metadb.Config, build func(*metadb.Store) (C, error)) error {
	store, err := metadb.Open(*mc)
	if err != nil {
		return err
	}
	defer store.Close()
	c, err := build(store)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

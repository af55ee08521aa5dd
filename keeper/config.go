package keeper

import (
	"fmt"
	"os"
	"time"

	"github.com/granary-db/granary/internal/defaults"
	"github.com/granary-db/granary/internal/importsrc"
	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/internal/objstore"
)

// Config of a keeper. Zero values take the defaults of DefaultConfig.
type Config struct {
	// Store keeps db exports and the RDB files restores read (see
	// internal/objstore); nil disables export and restore jobs.
	Store objstore.Store
	// RedisServer is the redis-server binary a restore's scratch server
	// runs (see scratch.go). Default "redis-server" from PATH.
	RedisServer string
	// ImportAllow lists, comma-separated, the prefixes (CIDR) of private
	// addresses an import source may be on (see internal/netguard); public
	// unicast addresses are always allowed, the cluster's own servers
	// never. Default "" (none).
	ImportAllow string
	// ID names the keeper in its lease and in Pair.Keeper; default
	// hostname-pid. Two keepers must not share an id.
	ID string
	// LeaseTTL is how long the keeper's lease lasts without renewal; it is
	// renewed every third of it. A keeper that could not renew for a whole
	// LeaseTTL stops reporting and measuring until it renews, because the
	// master may have given its pairs to another keeper. Default 3s.
	LeaseTTL time.Duration
	// PairsPoll is how often the keeper reads which pairs it is assigned.
	// Default 1s.
	PairsPoll time.Duration
	// JobPoll is how often the keeper looks for job steps it owns on its
	// pairs (copy, attach …). Default 100ms.
	JobPoll time.Duration

	// ProbeInterval is how often each server of a watched pair gets PING
	// and INFO server+replication. Default 250ms.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe of one server; a probe that takes
	// longer counts as the server being down. Default 500ms.
	ProbeTimeout time.Duration
	// MetricsAddr serves /metrics on this address when not empty (port 0
	// picks a free one; see Keeper.MetricsAddr). Default "" (off).
	MetricsAddr string
	// ReportInterval: a pair's health report is written on every change of
	// up/down, role, link or run id, and at least this often otherwise.
	// Default 1s.
	ReportInterval time.Duration
	// DetectTime is how long a pair's master must stay unreachable (since
	// its last good probe) before the keeper promotes the replica, provided
	// the replica has lost the master too. Default 1s.
	DetectTime time.Duration

	// SizingSweep is how often every db on the keeper's pairs is measured,
	// written or not. Default 60s.
	SizingSweep time.Duration
	// MeasureGap is the shortest time between two measurements of one db;
	// writes reported meanwhile are coalesced into the next one. Default
	// 500ms.
	MeasureGap time.Duration
	// MeasureWorkers is how many dbs are measured at once. Default 2.
	MeasureWorkers int
	// MeasureTimeout bounds one measurement (exact passes of big dbs take
	// longest: about 8s per million keys). Default 2m.
	MeasureTimeout time.Duration
	// Recalibrate: the sweep measures a db exactly (every key) when its last
	// exact measurement is older than this, which also refreshes the list
	// of big keys measured every time. Negative disables. Default 1h.
	Recalibrate time.Duration

	// ExactKeys: dbs with at most this many keys are always measured
	// exactly; negative: only recalibration is exact. Default 20000.
	ExactKeys int64
	// SampleKeys is the pilot sample of a sampled measurement: the spread
	// of its key sizes decides how many more keys to read. Default 2000.
	SampleKeys int64
	// MaxSampleKeys caps the keys read by a sampled measurement. At the
	// default, 10000, a 1M-key db costs about 1% of an exact pass.
	MaxSampleKeys int64
	// TargetError is the relative half-width of the 95% interval a sampled
	// measurement aims at (within MaxSampleKeys). Default 0.02.
	TargetError float64
	// ElementSamples is the SAMPLES argument of MEMORY USAGE in sampled
	// measurements: how many elements of a collection are read to size it.
	// Negative means every element (SAMPLES 0). Default 5 (Redis's own
	// default).
	ElementSamples int
	// ScanBatch is the SCAN COUNT, and so the keys per round trip. Default
	// 500.
	ScanBatch int
	// BigKeys is how many of a db's largest keys are measured in every
	// measurement instead of being sampled; BigKeyFactor is how many times
	// the mean key size a key must be to count as big. Defaults 64 and 16.
	BigKeys      int
	BigKeyFactor float64

	// KeyReportPoll is how often the keeper looks for requested key
	// reports of dbs on its pairs (a KeeperCommand on the bus makes it
	// look at once). Default 1s.
	KeyReportPoll time.Duration
	// KeyReportWorkers is how many key reports run at once. Default 1.
	KeyReportWorkers int
	// KeyReportBatch is the SCAN COUNT of a key report, and so the keys
	// per round trip (each costing TYPE, MEMORY USAGE and a length
	// command on the replica). Default 100.
	KeyReportBatch int
	// KeyReportMaxKeys stops a key report after scanning this many keys,
	// marking it partial. Default 2000000.
	KeyReportMaxKeys int64
	// KeyReportMaxTime stops a key report after this long, marking it
	// partial. Default 5m.
	KeyReportMaxTime time.Duration
	// KeyReportTop is the length of each list of a key report. Default 20.
	KeyReportTop int
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		ID:             fmt.Sprintf("%s-%d", host, os.Getpid()),
		RedisServer:    "redis-server",
		LeaseTTL:       3 * time.Second,
		PairsPoll:      time.Second,
		JobPoll:        100 * time.Millisecond,
		ProbeInterval:  250 * time.Millisecond,
		ProbeTimeout:   500 * time.Millisecond,
		ReportInterval: time.Second,
		DetectTime:     time.Second,
		SizingSweep:    60 * time.Second,
		MeasureGap:     500 * time.Millisecond,
		MeasureWorkers: 2,
		MeasureTimeout: 2 * time.Minute,
		Recalibrate:    time.Hour,
		ExactKeys:      20000,
		SampleKeys:     2000,
		MaxSampleKeys:  10000,
		TargetError:    0.02,
		ElementSamples: 5,
		ScanBatch:      500,
		BigKeys:        64,
		BigKeyFactor:   16,

		KeyReportPoll:    time.Second,
		KeyReportWorkers: 1,
		KeyReportBatch:   100,
		KeyReportMaxKeys: 2_000_000,
		KeyReportMaxTime: 5 * time.Minute,
		KeyReportTop:     20,
	}
}

// Validate fills zero fields with their defaults and checks the rest.
func (c *Config) Validate() error {
	d := DefaultConfig()
	defaults.Fill(&c.ID, d.ID)
	defaults.Fill(&c.RedisServer, d.RedisServer)
	defaults.Fill(&c.LeaseTTL, d.LeaseTTL)
	defaults.Fill(&c.PairsPoll, d.PairsPoll)
	defaults.Fill(&c.JobPoll, d.JobPoll)
	defaults.Fill(&c.ProbeInterval, d.ProbeInterval)
	defaults.Fill(&c.ProbeTimeout, d.ProbeTimeout)
	defaults.Fill(&c.ReportInterval, d.ReportInterval)
	defaults.Fill(&c.DetectTime, d.DetectTime)
	defaults.Fill(&c.SizingSweep, d.SizingSweep)
	defaults.Fill(&c.MeasureGap, d.MeasureGap)
	defaults.Fill(&c.MeasureTimeout, d.MeasureTimeout)
	defaults.Fill(&c.Recalibrate, d.Recalibrate)
	defaults.Fill(&c.MeasureWorkers, d.MeasureWorkers)
	defaults.Fill(&c.ExactKeys, d.ExactKeys)
	defaults.Fill(&c.SampleKeys, d.SampleKeys)
	defaults.Fill(&c.MaxSampleKeys, d.MaxSampleKeys)
	defaults.Fill(&c.TargetError, d.TargetError)
	defaults.Fill(&c.ElementSamples, d.ElementSamples)
	defaults.Fill(&c.ScanBatch, d.ScanBatch)
	defaults.Fill(&c.BigKeys, d.BigKeys)
	defaults.Fill(&c.BigKeyFactor, d.BigKeyFactor)
	defaults.Fill(&c.KeyReportPoll, d.KeyReportPoll)
	defaults.Fill(&c.KeyReportWorkers, d.KeyReportWorkers)
	defaults.Fill(&c.KeyReportBatch, d.KeyReportBatch)
	defaults.Fill(&c.KeyReportMaxKeys, d.KeyReportMaxKeys)
	defaults.Fill(&c.KeyReportMaxTime, d.KeyReportMaxTime)
	defaults.Fill(&c.KeyReportTop, d.KeyReportTop)
	switch {
	case c.LeaseTTL < 100*time.Millisecond:
		return fmt.Errorf("lease ttl %v is below 100ms", c.LeaseTTL)
	case c.ProbeInterval < 10*time.Millisecond:
		return fmt.Errorf("probe interval %v is below 10ms", c.ProbeInterval)
	case c.PairsPoll < 0, c.ProbeTimeout < 0, c.DetectTime < 0, c.ReportInterval < 0, c.SizingSweep < 0,
		c.MeasureGap < 0, c.MeasureTimeout < 0:
		return fmt.Errorf("negative duration in keeper config")
	case c.MeasureWorkers < 1:
		return fmt.Errorf("measure workers %d < 1", c.MeasureWorkers)
	case c.SampleKeys < 2:
		return fmt.Errorf("sample keys %d < 2", c.SampleKeys)
	case c.MaxSampleKeys < c.SampleKeys:
		return fmt.Errorf("max sample keys %d < sample keys %d", c.MaxSampleKeys, c.SampleKeys)
	case c.TargetError <= 0 || c.TargetError >= 1:
		return fmt.Errorf("target error %v is not in (0, 1)", c.TargetError)
	case c.ScanBatch < 1:
		return fmt.Errorf("scan batch %d < 1", c.ScanBatch)
	case c.KeyReportPoll < 0 || c.KeyReportMaxTime < 0 || c.KeyReportWorkers < 1 || c.KeyReportBatch < 1 || c.KeyReportMaxKeys < 1 || c.KeyReportTop < 1:
		return fmt.Errorf("key report settings: poll %v, workers %d, batch %d, max keys %d, max time %v, top %d: want positive values",
			c.KeyReportPoll, c.KeyReportWorkers, c.KeyReportBatch, c.KeyReportMaxKeys, c.KeyReportMaxTime, c.KeyReportTop)
	case c.BigKeys < 0 || c.BigKeyFactor < 1:
		return fmt.Errorf("big keys %d / factor %v: want >= 0 / >= 1", c.BigKeys, c.BigKeyFactor)
	}
	if _, err := netguard.New(importsrc.SplitAllow(c.ImportAllow)); err != nil {
		return fmt.Errorf("import allow: %w", err)
	}
	return nil
}

func (c *Config) sizing() sizing {
	samples := c.ElementSamples
	if samples < 0 {
		samples = 0
	}
	return sizing{
		exactKeys:      c.ExactKeys,
		plan:           samplePlan{pilot: c.SampleKeys, max: c.MaxSampleKeys, target: c.TargetError},
		elementSamples: samples,
		batch:          c.ScanBatch,
		bigKeys:        c.BigKeys,
		bigKeyFactor:   c.BigKeyFactor,
	}
}

package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/granary-db/granary/metadb"
)

// Config of a Proxy. Zero fields are not defaults: start from DefaultConfig.
type Config struct {
	// Addr is the RESP listen address. Default 127.0.0.1:7379.
	Addr string
	// ID names this proxy in metadb. Default "<hostname>-<port of Addr>".
	ID string
	// Advertise is the address tenants are told to use (stored in metadb).
	// Default: Addr.
	Advertise string
	// MetricsAddr serves /metrics when not empty. Default "" (off).
	MetricsAddr string

	// MaxClients bounds concurrent tenant connections. Default 10000.
	MaxClients int
	// DefaultMaxConnections is a tenant's connection limit on this proxy
	// when the admin set none (proxy/limits.go). Default 1000
	// (metadb.DefaultMaxConnections).
	DefaultMaxConnections int64
	// DefaultOpsPerSec is the commands per second each db of a tenant may
	// take on this proxy when the admin set no limit; 0 is none. Default 0
	// (metadb.DefaultOpsPerSec).
	DefaultOpsPerSec int64
	// RateBurst is how many seconds' worth of a db's ops/s limit it may
	// spend at once (at least one command); at least 50ms, as the limit
	// runs on the proxy's 10 ms coarse clock. Default 1s.
	RateBurst time.Duration
	// MaxMultibulk bounds the elements of one request (Redis: 1M). Default 1048576.
	MaxMultibulk int64
	// MaxBulk bounds one argument (Redis proto-max-bulk-len). Default 512 MB.
	MaxBulk int64
	// MaxUnauthMultibulk and MaxUnauthBulk bound requests before AUTH
	// (Redis: 10 elements, 16 KB).
	MaxUnauthMultibulk int64
	MaxUnauthBulk      int64
	// MaxInline bounds an inline (telnet) request. Default 64 KB.
	MaxInline int
	// MaxOutput bounds the replies one connection may have pending; a
	// client that makes the proxy hold more is disconnected. Default 512 MB.
	MaxOutput int64
	// IdleTimeout closes connections idle for that long; 0 never. Pub/sub
	// and blocked connections are exempt. Default 0 (Redis's default).
	IdleTimeout time.Duration
	// WriteTimeout bounds writing replies to a tenant that does not read
	// them: a write blocked for at least half of it (a rolling deadline)
	// closes the connection. Default 60s.
	WriteTimeout time.Duration
	// MaxBatch bounds how many pipelined requests of one client are
	// dispatched before their replies are written. Default 256.
	MaxBatch int

	// BackendConns is the number of shared, pipelined connections per
	// (backend server, db). Each client is pinned to one of them, which
	// keeps its commands in order. Default 1: one connection hands Redis
	// the biggest batches; with two, GET at pipeline 1 cost the proxy and
	// Redis 3-9 % more CPU per request, and SET came out even
	// (docs/benchmarks.md).
	BackendConns int
	// BackendPassword authenticates the proxy's backend connections as
	// the default user before it switches to its restricted users. Default "".
	BackendPassword string
	// TenantUser and ScriptUser are the restricted ACL users the proxy
	// creates on backend masters: tenant commands run as TenantUser,
	// scripts and transactions as ScriptUser (no pub/sub, so a script
	// cannot publish outside the tenant's namespace). Defaults
	// "granary-tenant" and "granary-script".
	TenantUser string
	ScriptUser string
	// DialTimeout bounds connecting to a backend. Default 1s.
	DialTimeout time.Duration
	// BackendTimeout bounds waiting for a backend's reply on a shared
	// connection (on top of ConfirmTimeout for confirmed writes); when it
	// passes the connection is dropped and its requests fail. Default 5s.
	BackendTimeout time.Duration
	// ConfirmTimeout is how long a confirmed write waits for the replica
	// (WAIT 1 <ms>) before it is answered with an error. Default 1s.
	ConfirmTimeout time.Duration
	// StallReport is how long a request to a backend may wait without any
	// reply on its connection before the proxy reports the backend stalled
	// in its heartbeat (Member.BackendStalled, sent at once): the keepers'
	// witness of a hung master. Default 500ms.
	StallReport time.Duration

	// LeaseTTL is the proxy's lease in metadb. The proxy refuses writes
	// once LeaseTTL minus LeaseMargin has passed since its last renewal.
	// Default 6s.
	LeaseTTL time.Duration
	// LeaseMargin is the safety margin of self-fencing. Default 1s.
	LeaseMargin time.Duration
	// HeartbeatInterval is how often the lease is renewed and activity
	// reported. Default 1s.
	HeartbeatInterval time.Duration
	// ActivityInterval is how often written dbs are reported on the bus
	// between heartbeats (nothing is sent when nothing was written).
	// Default 250ms.
	ActivityInterval time.Duration
	// MaxHeld bounds writes waiting on one db's resize hold. Default 10000.
	MaxHeld int
	// MaxHoldWait bounds a hold that carries no deadline. Default 30s.
	MaxHoldWait time.Duration
	// DrainTimeout bounds the drain at shutdown (see Proxy.Serve): once
	// the listener is closed, the commands already read, writes held by a
	// resize hold among them, get this long to finish while the lease and
	// the bus stay up; then held writes give up, requests still waiting on
	// a backend fail and the remaining connections are closed. Default 10s.
	DrainTimeout time.Duration
	// RedisVersion is what HELLO and INFO report. Default "7.0.15".
	RedisVersion string

	// HotKeySample samples one in this many keyed commands of each
	// connection, on average, for the hot-key report (hotkeys.go); 0 is
	// off. Default 16.
	HotKeySample int
	// HotKeyInterval is how often each db's hot keys are published to
	// metadb. Default 5s.
	HotKeyInterval time.Duration
	// HotKeyWindow is the time constant of the counts' exponential decay:
	// a report reflects about the last HotKeyWindow. Default 1m.
	HotKeyWindow time.Duration
	// HotKeyDBs caps the dbs with a hot-key summary at a time (each at
	// most 128 counters of at most 128 bytes of key name). Default 1024.
	HotKeyDBs int
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		Addr:                  "127.0.0.1:7379",
		MaxClients:            10000,
		DefaultMaxConnections: metadb.DefaultMaxConnections,
		DefaultOpsPerSec:      metadb.DefaultOpsPerSec,
		RateBurst:             time.Second,
		MaxMultibulk:          1024 * 1024,
		MaxBulk:               512 << 20,
		MaxUnauthMultibulk:    10,
		MaxUnauthBulk:         16 << 10,
		MaxInline:             64 << 10,
		MaxOutput:             512 << 20,
		WriteTimeout:          60 * time.Second,
		MaxBatch:              256,
		BackendConns:          1,
		TenantUser:            "granary-tenant",
		ScriptUser:            "granary-script",
		DialTimeout:           time.Second,
		BackendTimeout:        5 * time.Second,
		ConfirmTimeout:        time.Second,
		StallReport:           500 * time.Millisecond,
		LeaseTTL:              6 * time.Second,
		LeaseMargin:           time.Second,
		HeartbeatInterval:     time.Second,
		ActivityInterval:      250 * time.Millisecond,
		MaxHeld:               10000,
		MaxHoldWait:           30 * time.Second,
		DrainTimeout:          10 * time.Second,
		RedisVersion:          "7.0.15",
		HotKeySample:          16,
		HotKeyInterval:        5 * time.Second,
		HotKeyWindow:          time.Minute,
		HotKeyDBs:             1024,
	}
}

// Validate checks the config and fills ID and Advertise when empty.
func (c *Config) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %w", c.Addr, err))
	} else if c.ID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "proxy"
		}
		c.ID = host + "-" + port
	}
	if c.Advertise == "" {
		c.Advertise = c.Addr
	}
	pos := func(name string, v int64) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, is %d", name, v))
		}
	}
	pos("max clients", int64(c.MaxClients))
	pos("max multibulk", c.MaxMultibulk)
	pos("default max connections", c.DefaultMaxConnections)
	// Above a minute a burst is no longer a burst; the cap also keeps
	// rate × burst inside int64 for the highest ops/s a tenant may get.
	if c.RateBurst < 50*time.Millisecond || c.RateBurst > time.Minute {
		errs = append(errs, fmt.Errorf("rate burst %v must be from 50ms to 1m", c.RateBurst))
	}
	if c.DefaultOpsPerSec < 0 {
		errs = append(errs, fmt.Errorf("default ops per sec %d < 0", c.DefaultOpsPerSec))
	}
	pos("max bulk", c.MaxBulk)
	pos("max unauthenticated multibulk", c.MaxUnauthMultibulk)
	pos("max unauthenticated bulk", c.MaxUnauthBulk)
	pos("max inline", int64(c.MaxInline))
	pos("max output", c.MaxOutput)
	pos("max batch", int64(c.MaxBatch))
	pos("backend conns", int64(c.BackendConns))
	pos("dial timeout", int64(c.DialTimeout))
	pos("backend timeout", int64(c.BackendTimeout))
	pos("confirm timeout", int64(c.ConfirmTimeout))
	pos("stall report", int64(c.StallReport))
	pos("write timeout", int64(c.WriteTimeout))
	pos("lease ttl", int64(c.LeaseTTL))
	pos("heartbeat interval", int64(c.HeartbeatInterval))
	pos("activity interval", int64(c.ActivityInterval))
	pos("max held", int64(c.MaxHeld))
	pos("max hold wait", int64(c.MaxHoldWait))
	pos("drain timeout", int64(c.DrainTimeout))
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v < 0", c.IdleTimeout))
	}
	if c.LeaseMargin < 0 || c.LeaseMargin >= c.LeaseTTL {
		errs = append(errs, fmt.Errorf("lease margin %v must be in [0, lease ttl %v)", c.LeaseMargin, c.LeaseTTL))
	}
	if c.HeartbeatInterval >= c.LeaseTTL-c.LeaseMargin {
		errs = append(errs, fmt.Errorf("heartbeat interval %v must be shorter than lease ttl - margin", c.HeartbeatInterval))
	}
	if c.TenantUser == "" || c.ScriptUser == "" || c.TenantUser == c.ScriptUser || c.TenantUser == "default" || c.ScriptUser == "default" {
		errs = append(errs, fmt.Errorf("tenant user %q and script user %q must be distinct, non-default names", c.TenantUser, c.ScriptUser))
	}
	if c.HotKeySample < 0 || c.HotKeySample > 1<<20 {
		errs = append(errs, fmt.Errorf("hot key sample %d must be from 0 (off) to 1048576", c.HotKeySample))
	}
	if c.HotKeySample > 0 {
		pos("hot key interval", int64(c.HotKeyInterval))
		pos("hot key dbs", int64(c.HotKeyDBs))
		if c.HotKeyWindow < c.HotKeyInterval {
			errs = append(errs, fmt.Errorf("hot key window %v must be at least the interval %v", c.HotKeyWindow, c.HotKeyInterval))
		}
	}
	if c.RedisVersion == "" {
		c.RedisVersion = "7.0.15"
	}
	return errors.Join(errs...)
}

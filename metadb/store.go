// Package metadb is Granary's state store: every record of the control plane
// lives in one Redis (the metadb), and this is the only package that knows its
// key names. It also carries the bus (pub/sub of versioned protobuf messages)
// and the leader lease.
//
// Records change only through optimistic transactions (WATCH/MULTI/EXEC) or
// Lua scripts, so concurrent writers never lose each other's changes. Writes
// made on behalf of the leading master carry its Fence and are refused once
// another master leads. When the metadb has replicas, every transaction is
// confirmed on them with WAIT before it counts.
package metadb

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Sentinel errors. Callers match them with errors.Is. A pair or pool
// without a free slot is pools.ErrNoCapacity, the one no-capacity error.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrConflict     = errors.New("too many concurrent changes, try again")
	ErrNotLeader    = errors.New("not the leading master")
	ErrNotConfirmed = errors.New("metadb replica did not confirm the write")
	ErrTenantLimit  = errors.New("tenant db limit reached")
	ErrBadState     = errors.New("bad state for this operation")
)

// Config of a Store.
type Config struct {
	// URL of the metadb, e.g. redis://127.0.0.1:6379/0. With Sentinels set
	// its host is not used: its db number and credentials are.
	URL string
	// Sentinels are host:port addresses of the Redis Sentinels that watch
	// the metadb (a master with replicas). When set, the Store asks them
	// where the master is, and goes to the new master after a failover
	// (go-redis's failover client). Empty: the metadb is URL's server.
	Sentinels []string
	// MasterName is the name the Sentinels monitor the metadb under.
	// Required with Sentinels; default "granary".
	MasterName string
	// Replicas is how many metadb replicas must confirm each write (WAIT).
	// 0 disables the check. Default 0.
	Replicas int
	// ConfirmTimeout bounds each WAIT. Default 1s.
	ConfirmTimeout time.Duration
	// PoolSize of the go-redis client. Default 32.
	PoolSize int
	// AuditMaxLen caps the audit stream's length (approximately: XADD
	// MAXLEN ~). 0 means the default, 100,000 entries.
	AuditMaxLen int
	// AuditMaxAge drops audit entries older than this (approximately: XTRIM
	// MINID ~, on every append). 0 means the default, 30 days.
	AuditMaxAge time.Duration
}

// The audit stream's default caps.
const (
	DefaultAuditMaxLen = 100_000
	DefaultAuditMaxAge = 30 * 24 * time.Hour
)

// DefaultConfig is a Config for a metadb on the local default port.
func DefaultConfig() Config {
	return Config{URL: "redis://127.0.0.1:6379/0", MasterName: "granary", ConfirmTimeout: time.Second, PoolSize: 32,
		AuditMaxLen: DefaultAuditMaxLen, AuditMaxAge: DefaultAuditMaxAge}
}

// Validate checks the config.
func (c Config) Validate() error {
	if _, err := redis.ParseURL(c.URL); err != nil {
		return fmt.Errorf("metadb url %q: %w", c.URL, err)
	}
	if len(c.Sentinels) > 0 && c.MasterName == "" {
		return errors.New("metadb sentinels need a master name")
	}
	for _, a := range c.Sentinels {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("metadb sentinel %q: want host:port", a)
		}
	}
	if c.Replicas < 0 {
		return fmt.Errorf("metadb replicas %d < 0", c.Replicas)
	}
	if c.AuditMaxLen < 0 {
		return fmt.Errorf("metadb audit max len %d < 0", c.AuditMaxLen)
	}
	if c.AuditMaxAge < 0 {
		return fmt.Errorf("metadb audit max age %v < 0", c.AuditMaxAge)
	}
	return nil
}

// Store is the typed view of the metadb. It is safe for concurrent use.
type Store struct {
	rdb *redis.Client
	cfg Config
	// sentinel is set when the metadb is found through Sentinels.
	sentinel bool
}

// Open returns a Store for cfg. It does no I/O.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opt, _ := redis.ParseURL(cfg.URL)
	// Plain Redis does not know CLIENT MAINT_NOTIFICATIONS. In go-redis's
	// default "auto" mode the refused handshake rewrites the client's options
	// on a new connection while Watch copies them: a data race (go-redis
	// #3739). The metadb is never a managed endpoint that would send them.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	if cfg.PoolSize > 0 {
		opt.PoolSize = cfg.PoolSize
	}
	if cfg.ConfirmTimeout <= 0 {
		cfg.ConfirmTimeout = time.Second
	}
	if cfg.AuditMaxLen == 0 {
		cfg.AuditMaxLen = DefaultAuditMaxLen
	}
	if cfg.AuditMaxAge == 0 {
		cfg.AuditMaxAge = DefaultAuditMaxAge
	}
	if len(cfg.Sentinels) == 0 {
		return &Store{rdb: redis.NewClient(opt), cfg: cfg}, nil
	}
	// Every connection, the bus's included, is dialed to the master the
	// Sentinels name at that moment; when they announce a new master,
	// go-redis drops the pooled connections to the old one. A dropped
	// subscription redials the same way (see Subscribe).
	fo := &redis.FailoverOptions{
		MasterName:    cfg.MasterName,
		SentinelAddrs: cfg.Sentinels,
		Username:      opt.Username,
		Password:      opt.Password,
		DB:            opt.DB,
		PoolSize:      opt.PoolSize,
		// A dial to the dead master fails fast, so the next one asks the
		// Sentinels again.
		DialTimeout: time.Second,
	}
	return &Store{rdb: redis.NewFailoverClient(fo), cfg: cfg, sentinel: true}, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// MasterAddr asks the Sentinels which server is the metadb master now
// (host:port). Without Sentinels it is URL's server.
func (s *Store) MasterAddr(ctx context.Context) (string, error) {
	if !s.sentinel {
		return s.rdb.Options().Addr, nil
	}
	var lastErr error
	for _, a := range s.cfg.Sentinels {
		c := newSentinelClient(a)
		hp, err := c.GetMasterAddrByName(ctx, s.cfg.MasterName).Result()
		_ = c.Close()
		if err == nil && len(hp) == 2 {
			return net.JoinHostPort(hp[0], hp[1]), nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("metadb master %q: no sentinel answers: %v", s.cfg.MasterName, lastErr)
}

// Ping checks that the metadb answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Version is the current topology version.
func (s *Store) Version(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, keyVersion).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// txn runs fn in an optimistic transaction over keys, retrying when a
// watched key changed. With a non-nil fence the leader key is watched too
// and the transaction is refused with ErrNotLeader unless the fence still
// holds. fn reads through tx and queues its writes with tx.TxPipelined.
func (s *Store) txn(ctx context.Context, f *Fence, fn func(tx *redis.Tx) error, keys ...string) error {
	if f != nil {
		keys = append(keys, keyLeader)
	}
	backoff := time.Millisecond
	for attempt := 0; attempt < 100; attempt++ {
		err := s.rdb.Watch(ctx, func(tx *redis.Tx) error {
			if f != nil {
				v, err := tx.Get(ctx, keyLeader).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					return err
				}
				if v != f.value() {
					return ErrNotLeader
				}
			}
			if err := fn(tx); err != nil {
				return err
			}
			return s.confirm(ctx, tx)
		}, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff < 50*time.Millisecond {
			backoff *= 2
		}
	}
	return ErrConflict
}

// confirm waits until the configured number of metadb replicas has every
// write sent so far on this connection.
func (s *Store) confirm(ctx context.Context, c doer) error {
	if s.cfg.Replicas == 0 {
		return nil
	}
	// The typed Wait stretches the read deadline to the WAIT timeout; a raw
	// Do("WAIT") hits the client's read timeout (3s) first and breaks the
	// connection instead of reporting ErrNotConfirmed.
	n, err := c.Wait(ctx, s.cfg.Replicas, s.cfg.ConfirmTimeout).Result()
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	if int(n) < s.cfg.Replicas {
		return fmt.Errorf("%w (%d of %d)", ErrNotConfirmed, n, s.cfg.Replicas)
	}
	return nil
}

type doer interface {
	Wait(ctx context.Context, numSlaves int, timeout time.Duration) *redis.IntCmd
}

// runConfirmed runs WAIT after a script on a dedicated connection. A
// script's refusal comes back as its sentinel error (scriptError).
func (s *Store) runConfirmed(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	if s.cfg.Replicas == 0 {
		res, err := script.Run(ctx, s.rdb, keys, args...).Result()
		return res, scriptError(err)
	}
	conn := s.rdb.Conn()
	defer conn.Close()
	res, err := script.Run(ctx, conn, keys, args...).Result()
	if err != nil {
		return res, scriptError(err)
	}
	return res, s.confirm(ctx, conn)
}

func newSentinelClient(addr string) *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: time.Second,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
}

// txPipelinedConfirmed runs fn's commands in one MULTI/EXEC, then WAIT,
// on a dedicated connection.
func (s *Store) txPipelinedConfirmed(ctx context.Context, fn func(redis.Pipeliner) error) error {
	if s.cfg.Replicas == 0 {
		_, err := s.rdb.TxPipelined(ctx, fn)
		return err
	}
	conn := s.rdb.Conn()
	defer conn.Close()
	if _, err := conn.TxPipelined(ctx, fn); err != nil {
		return err
	}
	return s.confirm(ctx, conn)
}

// scriptCodes are the refusals our Lua scripts return, as
// redis.error_reply('GRANARY_<CODE> text'): the code is the reply's first
// word (where Redis puts its own, ERR or WRONGTYPE), and the prefix keeps it
// apart from every code Redis itself sends.
var scriptCodes = map[string]error{
	"GRANARY_NOTENANT":    ErrNotFound,
	"GRANARY_TENANTLIMIT": ErrTenantLimit,
	"GRANARY_NOFREE":      pools.ErrNoCapacity,
}

// scriptError maps a script's refusal to its sentinel: the one place that
// reads a script's error code. Anything else (a network error, an error
// reply of Redis's own, an unknown code) comes back unchanged.
func scriptError(err error) error {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return err
	}
	code, _, _ := strings.Cut(reply.Error(), " ")
	if sentinel, ok := scriptCodes[code]; ok {
		return sentinel
	}
	return err
}

// Client exposes the underlying client for tests and for components that
// need raw access to metadb health (never its keys).
func (s *Store) Client() *redis.Client { return s.rdb }

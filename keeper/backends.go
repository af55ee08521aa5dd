package keeper

import (
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// backends holds the keeper's clients of the pairs' servers: small ones
// with short timeouts for health probes, so a slow server reads as down
// fast, and separate ones for sizing, whose pipelines may take longer.
type backends struct {
	probeTimeout time.Duration
	sizeTimeout  time.Duration

	mu    sync.Mutex
	probe map[string]*redis.Client
	size  map[string]*redis.Client
}

func newBackends(probeTimeout, sizeTimeout time.Duration) *backends {
	return &backends{probeTimeout: probeTimeout, sizeTimeout: sizeTimeout,
		probe: map[string]*redis.Client{}, size: map[string]*redis.Client{}}
}

// prober is the health-probe client of addr. It never retries: a failed
// probe is an observation, and the next one comes a probe interval later.
// Nor does it retry a failed dial (go-redis retries five times by default).
// Its calls end at their context's deadline (a master already seen down
// is probed with a shorter one, health.go's masterProbeTimeout).
func (b *backends) prober(addr string) *redis.Client {
	return b.client(b.probe, addr, 2, 1, b.probeTimeout, true)
}

// sizer is the sizing client of addr. A measurement SELECTs the db it
// measures on the connection it holds, so a pooled connection may come back
// with any db selected: every use either SELECTs first or is db-agnostic.
func (b *backends) sizer(addr string) *redis.Client {
	return b.client(b.size, addr, 4, 0, b.sizeTimeout, false)
}

func (b *backends) client(m map[string]*redis.Client, addr string, pool, dials int, timeout time.Duration, ctxTimeout bool) *redis.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := m[addr]
	if !ok {
		c = redis.NewClient(&redis.Options{Addr: addr, PoolSize: pool, MaxRetries: -1, DialerRetries: dials,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, ContextTimeoutEnabled: ctxTimeout,
			// No CLIENT SETINFO handshake: these connections only probe and
			// measure, and an old server must not see an unknown command.
			DisableIdentity: true})
		m[addr] = c
	}
	return c
}

// retain closes the clients of servers that are no longer watched.
func (b *backends) retain(keep map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range []map[string]*redis.Client{b.probe, b.size} {
		for addr, c := range m {
			if !keep[addr] {
				_ = c.Close()
				delete(m, addr)
			}
		}
	}
}

func (b *backends) close() { b.retain(nil) }

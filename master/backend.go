package master

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// backends holds one small client per pair server the master talks to.
type backends struct {
	timeout time.Duration
	mu      sync.Mutex
	clients map[string]*redis.Client
}

func newBackends(timeout time.Duration) *backends {
	return &backends{timeout: timeout, clients: map[string]*redis.Client{}}
}

func (b *backends) client(addr string) *redis.Client {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.clients[addr]
	if !ok {
		c = redis.NewClient(&redis.Options{Addr: addr, PoolSize: 4, DialTimeout: b.timeout,
			ReadTimeout: b.timeout, WriteTimeout: b.timeout, MaxRetries: -1})
		b.clients[addr] = c
	}
	return c
}

// flushDB empties one db of the server at addr and waits for it to be gone.
// FLUSHDB replicates, so the pair's replica empties too.
func (b *backends) flushDB(ctx context.Context, addr string, db int) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	conn := b.client(addr).Conn()
	defer conn.Close()
	_, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Select(ctx, db)
		p.FlushDB(ctx)
		return nil
	})
	if err != nil {
		return fmt.Errorf("flush %s db %d: %w", addr, db, err)
	}
	return nil
}

func (b *backends) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.clients {
		_ = c.Close()
	}
	b.clients = map[string]*redis.Client{}
}

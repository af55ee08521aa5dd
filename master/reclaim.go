package master

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// reclaimInterval is how often the leader looks for demoted masters that
// came back.
const reclaimInterval = time.Second

// reclaimDemoted turns demoted masters that answer again into spares. A
// demoted master is never routed to (the failover took it out of its pair),
// so it serves no tenant; before it rejoins the spare pool it stops
// following anyone, is unfenced (it refuses writes since the failover) and
// is emptied (FLUSHALL), so that nothing of its old data can show when it
// is attached somewhere as a replica.
func (m *Master) reclaimDemoted(ctx context.Context, f *metadb.Fence) error {
	addrs, err := m.store.Demoted(ctx)
	if err != nil {
		return fmt.Errorf("list demoted masters: %w", err)
	}
	m.metrics.reclaimPasses.Inc()
	for _, a := range addrs {
		err := m.reclaim(ctx, f, a)
		switch {
		case errors.Is(err, metadb.ErrNotLeader):
			return err
		case err == nil:
			m.metrics.reclaimedAddrs.Inc()
			m.log.Info().Str("addr", a).Msg("demoted master emptied and back in the spare pool")
		}
	}
	return nil
}

// reclaim empties one demoted master if it answers; an unreachable one is
// tried again later (the error is not worth a log line: it is usually dead).
func (m *Master) reclaim(ctx context.Context, f *metadb.Fence, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DisableIdentity: true, PoolSize: 1,
		DialTimeout: 300 * time.Millisecond, ReadTimeout: m.cfg.BackendTimeout, WriteTimeout: m.cfg.BackendTimeout})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return err
	}
	// The keeper fenced it at the failover (keeper/failover.go:
	// min-replicas-to-write 1, which refuses FLUSHALL too). The fence is
	// lifted and the server emptied in one pipeline, which Redis runs
	// without another client's command in between: no write can land on
	// the old data set between the two.
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ConfigSet(ctx, "min-replicas-to-write", "0")
		p.Do(ctx, "REPLICAOF", "NO", "ONE")
		p.FlushAll(ctx)
		return nil
	})
	if err != nil {
		what := [...]string{"unfence", "detach", "flush"}
		for i, c := range cmds {
			if c.Err() != nil {
				return fmt.Errorf("%s %s: %w", what[i], addr, c.Err())
			}
		}
		return fmt.Errorf("reclaim %s: %w", addr, err)
	}
	ks, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		return err
	}
	if strings.Contains(ks, "keys=") {
		return fmt.Errorf("%s not empty after FLUSHALL", addr)
	}
	return m.store.ReclaimDemoted(ctx, f, addr)
}

package keeper

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// attachStep makes a replace_replica job's spare replicate the pair's new
// master (REPLICAOF) and waits until it is in sync: the spare's link is up,
// its initial sync is over, the master lists it as online (so WAIT counts
// it) and its applied offset has reached the master's offset read just
// before. It is idempotent: a spare that already follows the master is not
// told again (that would restart its sync). If the pair's master changed
// meanwhile, the step hands the job to the master's record step, which
// fails it and returns the spare.
func (k *Keeper) attachStep(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	spare, master := j.Data[metadb.ReplaceSpare], j.Data[metadb.ReplaceMaster]
	if spare == "" || master == "" {
		return "", fmt.Errorf("replace job %s without spare or master: %w", j.ID, metadb.ErrBadState)
	}
	p, err := k.store.Pair(ctx, j.Pair)
	if err != nil {
		return "", err
	}
	if p.Master != master {
		return metadb.StepRecord, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// Own short-lived clients: the spare is not a watched server, so the
	// pooled backends would close its client under us.
	sc := redis.NewClient(&redis.Options{Addr: spare, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second, DisableIdentity: true, PoolSize: 1})
	defer sc.Close()
	mc := redis.NewClient(&redis.Options{Addr: master, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second, DisableIdentity: true, PoolSize: 1})
	defer mc.Close()

	si, err := info(ctx, sc)
	if err != nil && ctx.Err() == nil {
		// A spare that does not answer is swapped for another one; it is
		// reclaimed (emptied, back in the pool) once it answers again.
		if derr := k.store.DropSpare(ctx, j.ID, spare, err.Error()); derr != nil {
			return "", fmt.Errorf("spare %s: %v; drop it: %w", spare, err, derr)
		}
		k.metrics.attaches.WithLabelValues(attachUnreachable).Inc()
		k.log.Warn().Err(err).Str("pair", j.Pair).Str("spare", spare).Msg("spare unreachable, taking another")
		return "", errWaitStep // the job is back at take_spare
	}
	if err != nil {
		return "", errWaitStep
	}
	// The spare syncs with the master's replication credential when the
	// watcher has made it (replguard.go); otherwise with none (a spare that
	// was a replica before still has its old pair's), and the watcher
	// tells it the credential once it is the pair's replica.
	ra, err := k.store.ReplAuth(ctx, j.Pair)
	if err != nil || ra.Master != master {
		ra = &metadb.ReplAuth{}
	}
	if err := tellReplAuth(ctx, sc, ra, time.Second); err != nil {
		return "", fmt.Errorf("spare %s: %w", spare, err)
	}
	// The spare runs under the pair's persistence policy (a pair added
	// before policies leaves the spare's own setting).
	if p.Persistence != "" {
		appendonly, appendfsync := pools.Persistence(p.Persistence).Config()
		args := []any{"CONFIG", "SET", "appendonly", appendonly}
		if appendfsync != "" {
			args = append(args, "appendfsync", appendfsync)
		}
		if err := sc.Do(ctx, args...).Err(); err != nil {
			return "", fmt.Errorf("spare %s: persistence %s: %w", spare, p.Persistence, err)
		}
	}
	if si.role != "slave" || si.masterAddr != master {
		// Told twice (two runs of the step), Redis answers "already
		// connected" and does not restart the sync.
		host, port, err := net.SplitHostPort(master)
		if err != nil {
			return "", err
		}
		if err := sc.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
			return "", fmt.Errorf("attach %s to %s: %w", spare, master, err)
		}
		k.log.Info().Str("pair", j.Pair).Str("spare", spare).Str("master", master).Msg("spare attached, syncing")
	}
	// Poll briskly: confirmed writes to the pair's dbs are refused until
	// the new replica is recorded.
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := inSync(ctx, mc, sc, spare)
		if err != nil && ctx.Err() == nil {
			return "", err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return "", errWaitStep
		case <-t.C:
		}
	}
	k.metrics.attaches.WithLabelValues(attachInSync).Inc()
	k.log.Info().Str("pair", j.Pair).Str("spare", spare).Msg("spare in sync")
	return metadb.StepRecord, nil
}

func info(ctx context.Context, c *redis.Client) (serverInfo, error) {
	s, err := c.Info(ctx, "server", "replication").Result()
	if err != nil {
		return serverInfo{}, err
	}
	return parseInfo(s), nil
}

// inSync says whether the spare's link is up, its initial sync over, the
// master lists it online (so WAIT counts it), and its applied offset has
// reached the master's offset read just before.
func inSync(ctx context.Context, mc, sc *redis.Client, spare string) (bool, error) {
	mi, err := info(ctx, mc)
	if err != nil {
		return false, fmt.Errorf("master: %w", err)
	}
	si, err := info(ctx, sc)
	if err != nil {
		return false, fmt.Errorf("spare %s: %w", spare, err)
	}
	line, listed := mi.findReplica(spare)
	return si.linkUp && !si.syncInProgress && listed && line.state == "online" && si.offset >= mi.offset, nil
}

package keeper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// The replication guard closes the persistence trap's last window (see
// failover.go): a master without persistence that restarts, however fast,
// comes back empty, and its replica must never sync from it.
//
// The pair's keeper creates an ACL user on the master at run time (ACL
// SETUSER, never saved: Granary runs no CONFIG REWRITE or ACL SAVE) and
// tells the replica to authenticate with it (CONFIG SET masteruser,
// masterauth). A restarted master has forgotten the user, so the replica's
// handshake fails at AUTH and it keeps its data set; the keeper sees the
// master's run id differ from the one the credential was made on and
// fails the pair over (decideFailover). The credential is kept in metadb
// (metadb.ReplAuth) so that another keeper taking the pair over, and the
// spare attached by a failover, use the same one.
//
// The guard also sets the master's repl-ping-replica-period to one second
// at run time, the same way (never saved; redone after a restart), so that
// a hung master's silence shows at its replica within replicaSilenceFast
// even when no request is waiting on it (failover.go).

// replUser is the ACL user replicas sync with.
const replUser = "granary-repl"

// replUserRules are the user's rights: a replica's handshake and stream.
var replUserRules = []any{"reset", "on", "+psync", "+sync", "+replconf", "+ping"}

// replGuard is one pair watcher's memory of the credential.
type replGuard struct {
	ra *metadb.ReplAuth
	// told is "<replica run id>/<user>" of the replica last told the
	// credential, so a replica is told again after it restarts.
	told    string
	lastErr string
	// pinged is "<master>/<run id>" of the master last set to ping its
	// replicas every second (run-time only: a restart forgets it).
	pinged string
}

// fastPingPeriod is the repl-ping-replica-period the watcher sets on a
// pair's master, so that its replica hears from a healthy idle master every
// second and a silent one counts as lost after replicaSilenceFast.
const fastPingPeriod = "1"

// fastPing says whether the pair's master, as the process with run id
// runID, was set to ping its replicas every second.
func (g *replGuard) fastPing(master, runID string) bool {
	return runID != "" && g.pinged == master+"/"+runID
}

// fencedRun is the run id the pair's master had when its credential was
// made, "" when the watcher knows of none for this master.
func (g *replGuard) fencedRun(master string) string {
	if g.ra == nil || g.ra.Master != master {
		return ""
	}
	return g.ra.RunID
}

// guardReplication runs after every probe of a pair while the keeper holds
// its lease: it makes the credential for a master that has none (one that
// has not restarted under this watcher: that is the failover's business)
// and tells the pair's replica to use it.
func (k *Keeper) guardReplication(ctx context.Context, p metadb.Pair, h *metadb.PairHealth, g *replGuard, fw *failoverWatch) error {
	m := h.Master
	if fw.done || !k.leased() || !m.Up || m.RunID == "" {
		return nil
	}
	if g.ra == nil || g.ra.Master != p.Master {
		ra, err := k.store.ReplAuth(ctx, p.ID)
		if err != nil && !errors.Is(err, metadb.ErrNotFound) {
			return err
		}
		if err == nil && ra.Master == p.Master {
			g.ra = ra
		}
	}
	restartedHere := m.PrevRunID != "" && m.RestartedAt.After(fw.started)
	run := g.fencedRun(p.Master)
	// restarted: since its credential was made, or, with none made yet,
	// under this watcher's eyes.
	restarted := (run != "" && run != m.RunID) || (run == "" && restartedHere)
	switch {
	case !restarted && run == "":
		ra, err := k.makeReplAuth(ctx, p, m.RunID)
		if err != nil {
			return err
		}
		g.ra, g.told = ra, ""
		k.log.Info().Str("pair", p.ID).Str("master", p.Master).Msg("replication credential made on the master")
	case restarted && m.ReplID != "" && h.Replica.ReplID == m.ReplID:
		// The master restarted and its replica resynced from it anyway
		// (it had not been told the credential yet): nothing is left to
		// protect, but the next restart must be caught.
		ra, err := k.makeReplAuth(ctx, p, m.RunID)
		if err != nil {
			return err
		}
		g.ra, g.told = ra, ""
	case restarted && p.Replica == "":
		// A second failure: the master of a pair that has no replica
		// (a failover left it without one and no spare has synced yet)
		// restarted, before or after its credential was made. There is
		// no other copy to fail over to; a master that persists (AOF)
		// came back with its data and is the pair's source again, so the
		// spare being attached may sync from it. One without persistence
		// came back empty: it stays fenced, and the pair waits for an
		// operator.
		aof, err := k.aofEnabled(ctx, p.Master)
		if err != nil || !aof {
			return err
		}
		ra, err := k.makeReplAuth(ctx, p, m.RunID)
		if err != nil {
			return err
		}
		g.ra, g.told = ra, ""
		k.log.Warn().Str("pair", p.ID).Str("master", p.Master).
			Msg("the master of a pair without a replica restarted with its append-only file: it is the pair's replication source again")
	}
	if g.fencedRun(p.Master) != m.RunID {
		return nil // the master restarted: decideFailover acts
	}
	if !g.fastPing(p.Master, m.RunID) {
		if err := k.setFastPing(ctx, p.Master, m.RunID); err != nil {
			return err
		}
		g.pinged = p.Master + "/" + m.RunID
	}
	r := h.Replica
	if p.Replica == "" || !r.Up || r.RunID == "" || g.told == r.RunID+"/"+g.ra.User {
		return nil
	}
	if err := tellReplAuth(ctx, k.backends.prober(p.Replica), g.ra, k.cfg.ProbeTimeout); err != nil {
		return fmt.Errorf("replica %s: %w", p.Replica, err)
	}
	g.told = r.RunID + "/" + g.ra.User
	return nil
}

// makeReplAuth creates the replication user on the pair's master, checks
// that the master is still the process with run id runID (one that
// restarted meanwhile must not be trusted), and records the credential.
func (k *Keeper) makeReplAuth(ctx context.Context, p metadb.Pair, runID string) (*metadb.ReplAuth, error) {
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	ra := &metadb.ReplAuth{Master: p.Master, RunID: runID, User: replUser, Password: hex.EncodeToString(secret), At: time.Now().UTC()}
	c := k.backends.prober(p.Master)
	cctx, cancel := context.WithTimeout(ctx, k.cfg.ProbeTimeout)
	defer cancel()
	args := append([]any{"ACL", "SETUSER", ra.User}, replUserRules...)
	if err := c.Do(cctx, append(args, ">"+ra.Password)...).Err(); err != nil {
		return nil, fmt.Errorf("ACL SETUSER on master %s: %w", p.Master, err)
	}
	s, err := c.Info(cctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("master %s: %w", p.Master, err)
	}
	if got := parseInfo(s).runID; got != runID {
		return nil, fmt.Errorf("master %s restarted while its replication credential was made", p.Master)
	}
	if err := k.store.SetReplAuth(ctx, p.ID, ra); err != nil {
		return nil, err
	}
	return ra, nil
}

// setFastPing sets the master's repl-ping-replica-period to
// fastPingPeriod at run time and checks that it is still the process with
// run id runID (a restarted one has the setting from its config file).
func (k *Keeper) setFastPing(ctx context.Context, master, runID string) error {
	c := k.backends.prober(master)
	cctx, cancel := context.WithTimeout(ctx, k.cfg.ProbeTimeout)
	defer cancel()
	if err := c.ConfigSet(cctx, "repl-ping-replica-period", fastPingPeriod).Err(); err != nil {
		return fmt.Errorf("repl-ping-replica-period on master %s: %w", master, err)
	}
	s, err := c.Info(cctx, "server").Result()
	if err != nil {
		return fmt.Errorf("master %s: %w", master, err)
	}
	if got := parseInfo(s).runID; got != runID {
		return fmt.Errorf("master %s restarted while its ping period was set", master)
	}
	return nil
}

// tellReplAuth makes c, a replica (or a spare about to become one), sync
// with ra from its next connection to its master on; a live link is kept.
func tellReplAuth(ctx context.Context, c *redis.Client, ra *metadb.ReplAuth, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Do(ctx, "CONFIG", "SET", "masteruser", ra.User, "masterauth", ra.Password).Err()
}

// aofEnabled reports whether the server at addr runs with its append-only
// file on and loaded (INFO persistence: aof_enabled:1, not loading).
func (k *Keeper) aofEnabled(ctx context.Context, addr string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.ProbeTimeout)
	defer cancel()
	s, err := k.backends.prober(addr).Info(ctx, "persistence").Result()
	if err != nil {
		return false, fmt.Errorf("INFO persistence of %s: %w", addr, err)
	}
	return strings.Contains(s, "aof_enabled:1\r\n") && strings.Contains(s, "loading:0\r\n"), nil
}

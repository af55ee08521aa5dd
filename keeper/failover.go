package keeper

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
)

// Failover, the keeper's part (DESIGN.md, "Failover"): the watcher of a
// pair decides after every probe (decideFailover), promotes the replica
// with REPLICAOF NO ONE and records the failover in one metadb transaction
// (metadb.Store.Promote), which moves every db of the pair to the new
// master and records the replace_replica job; the keeper then runs that
// job's attach step (failover_attach.go).
//
// The persistence trap: a master without persistence that a supervisor
// restarts faster than DetectTime comes back empty with a new run id. Its
// replica cannot sync from it: the replica authenticates with a run-time
// ACL user the restarted master has forgotten (replguard.go), so its
// handshake fails before any sync and it keeps its data set. The watcher
// treats the master's new run id (seen by a probe, or differing from the
// run id the replication credential was made on) as a failure and
// promotes the replica. A replica that had not yet been told the
// credential (the first probe after it restarted) could still resync from
// an empty master; the watcher then makes a new credential for the next
// restart.

// replicaSilence is how long a replica whose link still reads "up" may go
// without hearing from its master before it counts as having lost it. The
// master pings its replicas every repl-ping-replica-period (10s by
// default), so an idle but healthy master stays under it.
const replicaSilence = 12 * time.Second

// replicaSilenceFast is replicaSilence for a master that the watcher set
// to ping its replicas every second (replguard.go, fastPingPeriod): an
// idle hung master is then failed over without any proxy's witness.
const replicaSilenceFast = 3 * time.Second

// A hung master (SIGSTOP, a stuck kernel or disk) keeps its TCP
// connections open: its replica's link stays "up" and goes silent only
// slowly (replicaSilence). A faster witness is the proxies: one whose
// requests to the master have gone unanswered for proxyStallMin reports it
// in its heartbeat (Member.BackendStalled), and the keeper counts that,
// with a replica that has heard nothing from the master for replicaQuiet,
// as agreement that the master is gone.
const (
	// proxyStallMin is the shortest unanswered wait in a proxy's stall
	// report that counts as a witness.
	proxyStallMin = 500 * time.Millisecond
	// replicaQuiet: the replica must not have heard from the master for
	// this long (INFO's master_last_io_seconds_ago, whole seconds). A live
	// master that a proxy waits on is either answering its replica's
	// stream or, for a WAIT, sends it REPLCONF GETACK at once.
	replicaQuiet = time.Second
)

// proxyView is what the live proxies say of a pair's master that the
// keeper cannot reach.
type proxyView struct {
	// sees names a proxy that got a reply from the master after the keeper
	// saw it go down: a veto.
	sees string
	// stalled names a proxy that reported, after the keeper's last good
	// probe of the master, a request to it unanswered for proxyStallMin.
	stalled string
}

// failoverWatch is one pair watcher's failover memory.
type failoverWatch struct {
	started time.Time
	// done: this watcher promoted the replica; the pair's record changed
	// and a new watcher takes over.
	done bool
	// lastWhy is the last reason for not failing over that was logged, so
	// a standing condition is logged once.
	lastWhy string
	lastErr string
}

// failoverDecision is decideFailover's answer.
type failoverDecision struct {
	promote bool
	reason  string // why promote, or why not
}

// decideFailover says whether the replica of a pair must be promoted, from
// the watching keeper's health report and, for a master it cannot reach,
// the proxies' view px:
//
//   - the replica must be up; a replica already promoted (a promotion
//     decided earlier but not recorded) is recorded whatever the master's
//     state, unless a proxy still reaches an unreachable master;
//   - a master that came back with a new run id since the watcher started,
//     or with another run id than fenced, the one its replication
//     credential was made on (replguard.go; "" if none), restarted, maybe
//     empty (the persistence trap): it has failed, as long as the replica
//     has not resynced from it (another replication id), which the
//     credential prevents;
//   - a master unreachable since its last good probe for at least detect
//     has failed only if a witness agrees and no proxy got a reply from it
//     since the keeper saw it down (px.sees vetoes). The witness is the
//     replica, its link down or silent for silence (replicaSilence, or
//     replicaSilenceFast for a master set to ping it every second), or,
//     for a hung master whose replica's link stays up, a proxy whose
//     requests went unanswered (px.stalled) together with a replica that
//     has heard nothing from the master for replicaQuiet. So a keeper cut
//     off from a master that its replica or the proxies still see does not
//     fail over on its own view; nor does a replica whose replication id
//     is not the master's (restarted empty, never resynced) get promoted:
//     it may miss confirmed writes.
func decideFailover(h metadb.PairHealth, px proxyView, started time.Time, fenced string, silence, detect time.Duration, now time.Time) failoverDecision {
	m, r := h.Master, h.Replica
	if r.Addr == "" || !r.Up {
		return failoverDecision{reason: "replica down"}
	}
	promoted := r.Role == "master"
	if m.Up {
		restarted := m.RunID != "" && m.PrevRunID != "" && m.RestartedAt.After(started)
		// A master whose run id is not the one its replication
		// credential was made on restarted too, whenever it did (before
		// this watcher started, or faster than a probe).
		forgot := fenced != "" && m.RunID != "" && m.RunID != fenced
		if restarted || forgot {
			if promoted || m.ReplID == "" || r.ReplID != m.ReplID {
				return failoverDecision{promote: true, reason: "master restarted"}
			}
			return failoverDecision{reason: "master restarted and the replica already resynced from it"}
		}
		if promoted {
			// A promotion that was decided but not recorded (the keeper
			// died, metadb refused): finish it. Undoing it instead would
			// resync the replica from a master that may have come back
			// empty; finishing it loses no acknowledged write, because
			// the master could not confirm any write without its replica.
			return failoverDecision{promote: true, reason: "replica already promoted"}
		}
		return failoverDecision{reason: "master up"}
	}
	last := m.LastOK
	if last.IsZero() {
		last = m.Since
	}
	if now.Sub(last) < detect {
		return failoverDecision{reason: "master down, within the detection time"}
	}
	if px.sees != "" {
		return failoverDecision{reason: "master unreachable from the keeper but proxy " + px.sees + " still reaches it"}
	}
	reason := reasonMasterDown
	if !promoted && r.LinkUp && time.Duration(r.LastIOSec)*time.Second < silence {
		switch {
		case px.stalled == "":
			return failoverDecision{reason: "master unreachable from the keeper but the replica still sees it"}
		case time.Duration(r.LastIOSec)*time.Second < replicaQuiet:
			return failoverDecision{reason: "master unreachable from the keeper and stalled at proxy " + px.stalled + ", but the replica heard from it within a second"}
		}
		reason = reasonMasterHung
	}
	if !promoted && m.ReplID != "" && r.ReplID != m.ReplID {
		// A replica restarted empty and never resynced has a replication
		// id of its own: it may miss confirmed writes. Never promote a
		// stale replica; the pair needs an operator.
		return failoverDecision{reason: "replica is not a copy of the master (another replication id)"}
	}
	return failoverDecision{promote: true, reason: reason}
}

// The reasons for promoting over an unreachable master: the replica lost
// it too, or it hangs (the proxies' requests go unanswered).
const (
	reasonMasterDown = "master down"
	reasonMasterHung = "master hung"
)

// proxiesOn returns what the live proxies say of master, which the keeper
// has not reached since h.Since (its last good probe was h.LastOK). A
// metadb that cannot tell gives an empty view: no veto, and no stall
// witness either.
func (k *Keeper) proxiesOn(ctx context.Context, master string, h metadb.NodeHealth) proxyView {
	var v proxyView
	ms, err := k.store.LiveMembers(ctx, metadb.KindProxy)
	if err != nil {
		return v
	}
	lastOK := h.LastOK
	if lastOK.IsZero() {
		lastOK = h.Since
	}
	for _, m := range ms {
		if ok := m.BackendOK[master]; ok.After(h.Since) && v.sees == "" {
			v.sees = m.ID
		}
		if s := m.BackendStalled[master]; !s.IsZero() && m.Reported.After(lastOK) && m.Reported.Sub(s) >= proxyStallMin && v.stalled == "" {
			v.stalled = m.ID
		}
	}
	return v
}

// checkFailover runs after every probe of a pair: it decides and, when the
// master failed, promotes the replica and records the failover. Failures
// are retried on the next probe.
func (k *Keeper) checkFailover(ctx context.Context, p metadb.Pair, h *metadb.PairHealth, fw *failoverWatch, fenced string, fastPing bool) {
	if fw.done || p.Replica == "" || !k.leased() {
		return
	}
	now := time.Now()
	var px proxyView
	if !h.Master.Up && now.Sub(h.Master.LastOK) >= k.cfg.DetectTime {
		px = k.proxiesOn(ctx, p.Master, h.Master)
	}
	silence := replicaSilence
	if fastPing {
		silence = replicaSilenceFast
	}
	d := decideFailover(*h, px, fw.started, fenced, silence, k.cfg.DetectTime, now)
	log := k.log.With().Str("pair", p.ID).Str("master", p.Master).Str("replica", p.Replica).Logger()
	if !d.promote {
		if d.reason != fw.lastWhy && !h.Master.Up {
			log.Info().Str("reason", d.reason).Msg("no failover")
		}
		fw.lastWhy = d.reason
		return
	}
	start := time.Now()
	job, err := k.promote(ctx, p, *h, d.reason)
	if err != nil {
		// Retried on the next probe (a promoted replica is not told
		// again); a pair reassigned or changed meanwhile gets a new
		// watcher. The same error is logged once.
		if ctx.Err() == nil && err.Error() != fw.lastErr {
			log.Warn().Err(err).Str("reason", d.reason).Msg("failover failed, will retry")
			fw.lastErr = err.Error()
		}
		k.metrics.failoverErrors.Inc()
		return
	}
	fw.done = true
	k.metrics.failovers.WithLabelValues(d.reason).Inc()
	ev := log.Warn().Str("reason", d.reason).Dur("took", time.Since(start)).Time("master_last_ok", h.Master.LastOK).Time("master_since", h.Master.Since)
	if job != nil {
		ev = ev.Str("job", job.ID).Str("spare", job.Data[metadb.ReplaceSpare])
	}
	ev.Msg("failover: replica promoted")
}

// promote makes the replica a master (REPLICAOF NO ONE, unless it already
// is) and records the failover in metadb. It returns the replace_replica
// job the record created (nil if the failover was already recorded).
func (k *Keeper) promote(ctx context.Context, p metadb.Pair, h metadb.PairHealth, reason string) (*metadb.Job, error) {
	c := k.backends.prober(p.Replica)
	pctx, cancel := context.WithTimeout(ctx, k.cfg.ProbeTimeout)
	defer cancel()
	if h.Replica.Role != "master" {
		if err := c.Do(pctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			return nil, fmt.Errorf("promote %s: %w", p.Replica, err)
		}
	}
	s, err := c.Info(pctx, "replication").Result()
	if err != nil {
		return nil, fmt.Errorf("offset of %s: %w", p.Replica, err)
	}
	in := parseInfo(s)
	if in.role != "master" {
		return nil, fmt.Errorf("promote %s: still %s", p.Replica, in.role)
	}
	// The fence goes out while the failover is recorded; a partitioned
	// old master costs its dial timeout, not the promotion's.
	fenced := make(chan error, 1)
	go func() { fenced <- fenceOldMaster(p.Master, k.cfg.ProbeTimeout) }()
	_, job, err := k.store.Promote(ctx, metadb.Promotion{Keeper: k.cfg.ID, Pair: p.ID, OldMaster: p.Master,
		NewMaster: p.Replica, Offset: in.offset, MasterOffset: h.Master.Offset, Reason: reason})
	if ferr := <-fenced; ferr != nil {
		k.log.Info().Err(ferr).Str("pair", p.ID).Str("master", p.Master).Msg("old master not fenced (unreachable)")
	}
	if err != nil {
		return nil, fmt.Errorf("record failover: %w", err)
	}
	return job, nil
}

// fenceCmds make a demoted master refuse every write (-NOREPLICAS) from
// any client: it needs a replica to accept a write, and has none, its old
// replica's link being dropped (the promoted replica closed it; CLIENT
// KILL frees it at once so that no stale link still counts). Reads and
// admin commands still work; master/reclaim.go sets min-replicas-to-write
// back to 0 before it empties the server.
var fenceCmds = [][]string{
	{"CONFIG", "SET", "min-replicas-to-write", "1"},
	{"CLIENT", "KILL", "TYPE", "replica"},
}

// fenceOldMaster sends fenceCmds to the old master of a failed-over pair
// on a fresh connection, without waiting for replies: a hung (stopped)
// master's kernel still accepts the connection and buffers the commands,
// and the master runs them, in order, as soon as it resumes, before any
// command on a connection accepted after ours. It returns an error when
// the master cannot be reached at all (dead: nothing to fence; or cut off,
// in which case no proxy writes to it either, the failover having moved
// its dbs). It blocks at most about twice timeout.
func fenceOldMaster(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	// Closed after writing: the commands are in the server's receive
	// buffer, ahead of the close, and run when the server reads them.
	defer c.Close()
	var b []byte
	for _, cmd := range fenceCmds {
		b = appendCommand(b, cmd)
	}
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err = c.Write(b)
	return err
}

// appendCommand appends cmd to b as a RESP array of bulk strings.
func appendCommand(b []byte, cmd []string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(cmd)), 10)
	b = append(b, '\r', '\n')
	for _, a := range cmd {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

// kickPairs asks the pairs loop to reread the pairs at once, so that a
// pair whose servers changed is watched again without waiting a poll.
func (k *Keeper) kickPairs() {
	select {
	case k.pairsKick <- struct{}{}:
	default:
	}
}

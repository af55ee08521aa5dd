package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// PairDegraded is the state of a pair whose replica was promoted and that
// has no replica until a spare is attached.
const PairDegraded = "degraded"

// ErrNoSpare means the spare pool is empty: a replica replacement waits
// until an operator adds a spare or a demoted master is reclaimed.
var ErrNoSpare = errors.New("no spare server")

// Promotion is what a keeper records after it promoted a pair's replica
// (REPLICAOF NO ONE) because the master failed.
type Promotion struct {
	Keeper    string
	Pair      string
	OldMaster string
	NewMaster string
	// Offset is the promoted replica's replication offset; MasterOffset the
	// old master's last offset the keeper saw (0 if unknown).
	Offset       int64
	MasterOffset int64
	// Reason says why: "master down", "master restarted".
	Reason string
}

// Promote records a failover in one transaction: the pair's master becomes
// the promoted replica, the pair has no replica and is degraded, the old
// master is demoted (never routed to again), the topology version is bumped
// with a Failover message, and a replace_replica job is recorded, with a
// spare taken from the pool when there is one (step StepAttach) or waiting
// for one (step StepTakeSpare).
//
// Only the keeper assigned to the pair, with a live lease, may promote, and
// only while the pair still has oldMaster and newMaster as its servers: a
// refused promotion returns an error wrapping ErrBadState. Recording a
// promotion that is already recorded returns the pair and a nil job. A
// recorded promotion is in the audit stream (pair.failover, by the keeper)
// from the same transaction.
func (s *Store) Promote(ctx context.Context, pr Promotion) (*Pair, *Job, error) {
	var outPair *Pair
	var outJob *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		outPair, outJob = nil, nil
		p, err := getJSON[Pair](ctx, tx, keyPair(pr.Pair))
		if err != nil {
			return fmt.Errorf("pair %s: %w", pr.Pair, err)
		}
		if p.Master == pr.NewMaster && p.Replica != pr.OldMaster {
			outPair = p // already recorded
			return nil
		}
		if p.Keeper != pr.Keeper {
			return fmt.Errorf("pair %s is watched by keeper %q, not %q: %w", p.ID, p.Keeper, pr.Keeper, ErrBadState)
		}
		if p.Master != pr.OldMaster || p.Replica != pr.NewMaster {
			return fmt.Errorf("pair %s is %s -> %s, not %s -> %s: %w", p.ID, p.Master, p.Replica, pr.OldMaster, pr.NewMaster, ErrBadState)
		}
		exp, err := tx.ZScore(ctx, keyKeepers, pr.Keeper).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if int64(exp) <= time.Now().UnixMilli() {
			return fmt.Errorf("keeper %s has no live lease: %w", pr.Keeper, ErrBadState)
		}
		spare, err := tx.SRandMember(ctx, keySpares).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		p.Master, p.Replica, p.State, p.ReplicaLostAt = pr.NewMaster, "", PairDegraded, time.Now().UTC()
		msg := &buspb.Envelope{Payload: &buspb.Envelope_Failover{Failover: &buspb.Failover{
			Pair: p.ID, OldMaster: pr.OldMaster, NewMaster: pr.NewMaster, Offset: pr.Offset}}}
		top := &topology{sender: "keeper/" + pr.Keeper, msgs: []*buspb.Envelope{msg}}
		next, payloads, err := top.stamp(ctx, tx)
		if err != nil {
			return err
		}
		ts := now()
		job := &Job{ID: "replace-" + p.ID + "-" + strconv.FormatUint(next, 10), Kind: JobReplace, State: JobRunning,
			Step: StepTakeSpare, Pair: p.ID, Created: ts, Updated: ts, Version: next,
			Log: []JobStep{{Step: StepPromote, At: ts, By: "keeper/" + pr.Keeper, Note: pr.Reason}},
			Data: map[string]string{ReplaceMaster: pr.NewMaster, ReplaceOldMaster: pr.OldMaster, ReplaceReason: pr.Reason,
				ReplaceOffset: strconv.FormatInt(pr.Offset, 10), ReplaceMasterOffset: strconv.FormatInt(pr.MasterOffset, 10)}}
		if spare != "" {
			job.Step, job.Data[ReplaceSpare] = StepAttach, spare
			job.Log = append(job.Log, JobStep{Step: StepTakeSpare, At: ts, By: "keeper/" + pr.Keeper, Note: spare})
		}
		pairJSON, _ := json.Marshal(p)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(p.ID), pairJSON, 0)
			pl.HSet(ctx, keyAddrs, pr.NewMaster, "pair "+p.ID+" master", pr.OldMaster, "demoted from pair "+p.ID)
			pl.SAdd(ctx, keyDemoted, pr.OldMaster)
			if spare != "" {
				pl.SRem(ctx, keySpares, spare)
				pl.HSet(ctx, keyAddrs, spare, "pair "+p.ID+" replica (attaching)")
			}
			queueTopology(ctx, pl, next, payloads)
			s.queueAudit(ctx, pl, &AuditEntry{Actor: "keeper/" + pr.Keeper, Action: AuditPairFailover,
				Target: p.ID + ": " + pr.OldMaster + " -> " + pr.NewMaster, Result: AuditOK, RequestID: job.ID})
			return queueNewJob(ctx, pl, job)
		})
		outPair, outJob = p, job
		return err
	}, keyPair(pr.Pair), keyVersion, keySpares, keyAddrs)
	return outPair, outJob, err
}

// TakeSpare gives a replace_replica job a spare from the pool, atomically:
// the spare leaves the pool and is recorded on the job. A job that already
// has one gets it again. ErrNoSpare when the pool is empty.
func (s *Store) TakeSpare(ctx context.Context, f *Fence, jobID string) (string, error) {
	var spare string
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		j, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil {
			return fmt.Errorf("job %s: %w", jobID, err)
		}
		if spare = j.Data[ReplaceSpare]; spare != "" {
			return nil
		}
		spare, err = tx.SRandMember(ctx, keySpares).Result()
		if errors.Is(err, redis.Nil) {
			spare = ""
			if j.Data[ReplaceNoSpareAt] != "" {
				return ErrNoSpare
			}
			// The first time: recorded on the job and audited, so the
			// operator learns the pool is empty once per pair left
			// without a replica.
			if j.Data == nil {
				j.Data = map[string]string{}
			}
			j.Data[ReplaceNoSpareAt], j.Updated = now(), now()
			b, _ := json.Marshal(j)
			if _, err := tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
				pl.Set(ctx, keyJob(jobID), b, 0)
				s.queueAudit(ctx, pl, &AuditEntry{Actor: "master/" + f.holder(), Action: AuditSparesEmpty,
					Target: j.Pair, Result: "error: " + ErrNoSpare.Error() + ": the pair has no replica until a spare is added", RequestID: jobID})
				return nil
			}); err != nil {
				return err
			}
			return ErrNoSpare
		}
		if err != nil {
			return err
		}
		if j.Data == nil {
			j.Data = map[string]string{}
		}
		j.Data[ReplaceSpare], j.Updated = spare, now()
		b, _ := json.Marshal(j)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.SRem(ctx, keySpares, spare)
			pl.HSet(ctx, keyAddrs, spare, "pair "+j.Pair+" replica (attaching)")
			pl.Set(ctx, keyJob(jobID), b, 0)
			return nil
		})
		return err
	}, keyJob(jobID), keySpares, keyAddrs)
	return spare, err
}

// drainedState is the state of a pair whose drain job is id, once it is
// healthy again: draining while the job runs, drained once it is done, and
// active, no longer tied to the job, when it failed or is gone (so a
// failover during a drain cannot leave the pair draining with nothing to
// drain it).
func drainedState(ctx context.Context, tx *redis.Tx, id string) (state, job string, err error) {
	j, err := getJSON[Job](ctx, tx, keyJob(id))
	switch {
	case errors.Is(err, ErrNotFound):
		return PairActive, "", nil
	case err != nil:
		return "", "", err
	case j.State == JobRunning:
		return PairDraining, id, nil
	case j.State == JobDone:
		return PairDrained, id, nil
	}
	return PairActive, "", nil
}

// FinishReplace ends a replace_replica job whose spare is attached and in
// sync: in one transaction the pair gets the spare as its replica and is
// active again, the version is bumped with a NewReplica message, and the
// job is done. If the pair's master is no longer the one the spare follows
// (another failover came first), the job fails and the spare goes back to
// the pool (it resyncs in full when attached again); the error wraps
// ErrBadState. A job already finished is left alone. Either outcome is
// recorded in the audit stream (spare.attach) in the same transaction.
func (s *Store) FinishReplace(ctx context.Context, f *Fence, jobID string) error {
	j0, err := s.Job(ctx, jobID)
	if err != nil {
		return err
	}
	var stale error
	var restored []*AuditEntry
	err = s.txn(ctx, f, func(tx *redis.Tx) error {
		stale, restored = nil, nil
		j, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil {
			return err
		}
		if j.State != JobRunning {
			return nil
		}
		p, err := getJSON[Pair](ctx, tx, keyPair(j.Pair))
		if err != nil {
			return fmt.Errorf("pair %s: %w", j.Pair, err)
		}
		spare := j.Data[ReplaceSpare]
		if spare == "" {
			return fmt.Errorf("job %s has no spare: %w", jobID, ErrBadState)
		}
		ts := now()
		by := f.holder()
		var next uint64
		var payloads [][]byte
		if p.Master != j.Data[ReplaceMaster] || (p.Replica != "" && p.Replica != spare) {
			stale = fmt.Errorf("pair %s is now %s -> %s: %w", p.ID, p.Master, p.Replica, ErrBadState)
			j.State, j.Error = JobFailed, stale.Error()
		} else {
			degraded := p.WritesDegraded
			p.Replica, p.State, p.ReplicaLostAt, p.WritesDegraded = spare, PairActive, time.Time{}, false
			if p.Job != "" { // a drain runs or ran on it
				if p.State, p.Job, err = drainedState(ctx, tx, p.Job); err != nil {
					return err
				}
			}
			if degraded {
				if restored, err = s.degradeAudit(ctx, tx, p.ID, false, "master/"+by, jobID); err != nil {
					return err
				}
			}
			msg := &buspb.Envelope{Payload: &buspb.Envelope_NewReplica{NewReplica: &buspb.NewReplica{Pair: p.ID, Replica: spare}}}
			top := &topology{sender: "master/" + by, msgs: []*buspb.Envelope{msg}}
			if next, payloads, err = top.stamp(ctx, tx); err != nil {
				return err
			}
			j.finish(StepRecord, by, ts)
		}
		j.Updated = ts
		pairJSON, _ := json.Marshal(p)
		jobJSON, _ := json.Marshal(j)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			if stale != nil {
				pl.SAdd(ctx, keySpares, spare)
				pl.HSet(ctx, keyAddrs, spare, "spare")
			} else {
				pl.Set(ctx, keyPair(p.ID), pairJSON, 0)
				pl.HSet(ctx, keyAddrs, spare, "pair "+p.ID+" replica")
				queueTopology(ctx, pl, next, payloads)
			}
			pl.Set(ctx, keyJob(jobID), jobJSON, 0)
			pl.SRem(ctx, keyJobsActive, jobID)
			s.queueAudit(ctx, pl, &AuditEntry{Actor: "master/" + by, Action: AuditSpareAttach,
				Target: p.ID + ": " + spare, Result: AuditResult(stale), RequestID: jobID})
			for _, e := range restored {
				s.queueAudit(ctx, pl, e)
			}
			return nil
		})
		return err
	}, keyJob(jobID), keyPair(j0.Pair), keyVersion, keyAddrs, keySpares)
	if err != nil {
		return err
	}
	return stale
}

// Demoted lists the old masters demoted by failovers and not yet reclaimed,
// sorted.
func (s *Store) Demoted(ctx context.Context) ([]string, error) {
	v, err := s.rdb.SMembers(ctx, keyDemoted).Result()
	sort.Strings(v)
	return v, err
}

// ReclaimDemoted moves an emptied demoted master into the spare pool, in one
// transaction. The caller must have flushed it (FLUSHALL) and made sure it
// follows no one. ErrNotFound if addr is not demoted.
func (s *Store) ReclaimDemoted(ctx context.Context, f *Fence, addr string) error {
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		ok, err := tx.SIsMember(ctx, keyDemoted, addr).Result()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("demoted %s: %w", addr, ErrNotFound)
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.SRem(ctx, keyDemoted, addr)
			pl.SAdd(ctx, keySpares, addr)
			pl.HSet(ctx, keyAddrs, addr, "spare")
			return nil
		})
		return err
	}, keyDemoted, keySpares, keyAddrs)
}

// DropSpare takes back the spare of a replace_replica job that cannot be
// attached (it does not answer): the job loses it and goes back to step
// take_spare, and the server joins the demoted masters, so that it is
// emptied and returned to the pool only once it answers again. A job whose
// spare is no longer spare is left alone.
func (s *Store) DropSpare(ctx context.Context, jobID, spare, why string) error {
	return s.txn(ctx, nil, func(tx *redis.Tx) error {
		j, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil {
			return fmt.Errorf("job %s: %w", jobID, err)
		}
		if j.State != JobRunning || j.Data[ReplaceSpare] != spare {
			return nil
		}
		delete(j.Data, ReplaceSpare)
		ts := now()
		j.Step, j.Updated = StepTakeSpare, ts
		j.Log = append(j.Log, JobStep{Step: StepDropSpare, At: ts, Note: spare + ": " + why})
		b, _ := json.Marshal(j)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyJob(jobID), b, 0)
			pl.SAdd(ctx, keyDemoted, spare)
			pl.HSet(ctx, keyAddrs, spare, "demoted (unreachable spare)")
			return nil
		})
		return err
	}, keyJob(jobID), keyAddrs)
}

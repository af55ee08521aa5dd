package master

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
)

// The master's steps of a resize job (see DESIGN.md, "Resize", and
// metadb/jobspec.go). copy belongs to the keeper of the source pair.
// catchup is the keeper's too, but the master waits for it actively (and
// keeps the hold fresh) instead of polling at JobPoll: the db's writes are
// held meanwhile, so every millisecond of that wait is a client's stall.

// Waits inside resize steps poll at this pace, for at most this long
// before handing back to the job runner.
const (
	resizePoll    = 2 * time.Millisecond
	resizeMaxWait = 2 * time.Second
)

// switchMargin: a hold this close to its deadline is never switched under
// (proxies may let it lapse before the switch reaches them).
func (m *Master) switchMargin() time.Duration { return min(time.Second, m.cfg.HoldTime/4) }

// errHoldLapsed: the hold passed (or nearly passed) its deadline before the
// switch, so writes may have reached the old slot again.
var errHoldLapsed = errors.New("write hold lapsed")

// resizeReserve claims a free slot of the target pool for the db. A shrink
// whose measured data no longer fits, or a pool without room, fails the
// job before anything moves.
func (m *Master) resizeReserve(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, _, ok := metadb.ResizeTarget(j); ok {
		return metadb.StepCopy, nil
	}
	size, err := pools.ParseSize(j.Data[metadb.ResizeToSize])
	if err != nil {
		return "", m.abortResize(ctx, f, j, fmt.Sprintf("bad target size %q", j.Data[metadb.ResizeToSize]))
	}
	db, err := m.store.DB(ctx, j.Tenant, j.Index)
	if err != nil {
		return "", err
	}
	if db.UsedBytes > size.Bytes() && db.Size != size.String() { // a move keeps the size
		return "", m.abortResize(ctx, f, j, fmt.Sprintf("the db holds %d bytes, more than %s: delete data first", db.UsedBytes, size))
	}
	if want := j.Data[metadb.ResizeWantPair]; want != "" { // a rebalance's move
		return m.reserveOn(ctx, f, j, want)
	}
	// Never the source pair: the target must be another slot.
	err = m.store.Place(ctx, size, j.Pair, func(ctx context.Context, p *metadb.Pair) error {
		_, err := m.store.ReserveResizeSlot(ctx, f, j.ID, p)
		return err
	})
	if errors.Is(err, pools.ErrNoCapacity) {
		return "", m.abortResize(ctx, f, j, fmt.Sprintf("no free %s db: the pool is full", size))
	}
	if errors.Is(err, metadb.ErrConflict) {
		return "", fmt.Errorf("reserve: %w", metadb.ErrConflict)
	}
	if err != nil {
		return "", err
	}
	return metadb.StepCopy, nil
}

// reserveOn claims a free slot of pair want for a rebalance's move, or
// fails the job when that pair is no longer active or has no room.
func (m *Master) reserveOn(ctx context.Context, f *metadb.Fence, j *metadb.Job, want string) (metadb.Step, error) {
	p, err := m.store.Pair(ctx, want)
	if errors.Is(err, metadb.ErrNotFound) || (err == nil && (p.State != metadb.PairActive || p.ID == j.Pair)) {
		return "", m.abortResize(ctx, f, j, fmt.Sprintf("target pair %s is gone, not active or the db's own", want))
	}
	if err != nil {
		return "", err
	}
	_, err = m.store.ReserveResizeSlot(ctx, f, j.ID, p)
	if errors.Is(err, pools.ErrNoCapacity) {
		return "", m.abortResize(ctx, f, j, fmt.Sprintf("no free db on pair %s", want))
	}
	if err != nil {
		return "", err
	}
	return metadb.StepCopy, nil
}

// abortResize ends the job as failed and puts the db back as it was; the
// runner sees the job ended.
func (m *Master) abortResize(ctx context.Context, f *metadb.Fence, j *metadb.Job, why string) error {
	m.log.Warn().Str("job", j.ID).Str("reason", why).Msg("resize refused")
	return m.store.AbortResize(ctx, f, j.ID, why)
}

// resizeHold records a write hold on the db (announced with a version bump)
// unless a fresh one is in place, then waits until every live proxy has
// applied it: from then on no write reaches the old slot.
func (m *Master) resizeHold(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	v, err := m.ensureHold(ctx, f, j, m.cfg.HoldTime/2)
	if err != nil {
		return "", err
	}
	if err := m.waitAcks(ctx, v); err != nil {
		return "", err
	}
	return metadb.StepCatchup, nil
}

// ensureHold (re)sets the db's hold when it has less than fresh left and
// returns the version proxies must apply for it.
func (m *Master) ensureHold(ctx context.Context, f *metadb.Fence, j *metadb.Job, fresh time.Duration) (uint64, error) {
	db, err := m.store.DB(ctx, j.Tenant, j.Index)
	if err != nil {
		return 0, err
	}
	if db.HoldJob == j.ID && time.Until(time.Unix(0, db.HoldUntil)) > fresh {
		// The hold's own version may not have been recorded (a master
		// that died right after setting it): the current one covers it.
		return m.store.Version(ctx)
	}
	// The hold names the slot the db will switch to, so that proxies
	// subscribe the db's subscribers there before they acknowledge it.
	var target string
	tp, ts, _ := metadb.ResizeTarget(j)
	if tp != "" {
		if p, err := m.store.Pair(ctx, tp); err == nil {
			target = p.Master
		}
	}
	until := time.Now().Add(m.cfg.HoldTime).UnixNano()
	_, err = m.store.UpdateDB(ctx, f, m.sender(), j.Tenant, j.Index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		if db.Job != j.ID {
			return nil, fmt.Errorf("db %s/%d belongs to job %s: %w", j.Tenant, j.Index, db.Job, metadb.ErrBadState)
		}
		db.HoldJob, db.HoldUntil, db.HoldTarget, db.HoldTargetDB = j.ID, until, target, ts
		return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{
			Tenant: j.Tenant, Index: uint32(j.Index), Hold: true, Job: j.ID, DeadlineUnixNanos: until,
			TargetMaster: target, TargetDb: uint32(ts)}}}}, nil
	})
	if err != nil {
		return 0, err
	}
	return m.recordVersion(ctx, f, j.ID)
}

// recordVersion stores the current topology version in the job as the one
// proxies must acknowledge, and returns it.
func (m *Master) recordVersion(ctx context.Context, f *metadb.Fence, id string) (uint64, error) {
	v, err := m.store.Version(ctx)
	if err != nil {
		return 0, err
	}
	_, err = m.store.UpdateJob(ctx, f, id, func(job *metadb.Job) error {
		job.Version = v
		return nil
	})
	return v, err
}

// waitAcks polls, briefly and often, until every live proxy has applied v
// (a lapsed lease counts: that proxy fenced itself). errWait after
// resizeMaxWait hands back to the runner.
func (m *Master) waitAcks(ctx context.Context, v uint64) error {
	deadline := time.Now().Add(resizeMaxWait)
	for {
		members, err := m.store.LiveMembers(ctx, metadb.KindProxy)
		if err != nil {
			return fmt.Errorf("list proxies: %w", err)
		}
		pending := unacked(members, v)
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w for proxies %v to reach version %d", errWait, pending, v)
		}
		if !sleep(ctx, resizePoll) {
			return ctx.Err()
		}
	}
}

// resizeWaitCatchup waits for the source pair's keeper to apply the last
// changes and verify the copy (it records the next step itself), keeping the
// hold from lapsing meanwhile.
func (m *Master) resizeWaitCatchup(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	deadline := time.Now().Add(resizeMaxWait)
	checked := time.Now()
	for {
		cur, err := m.store.Job(ctx, j.ID)
		if err != nil {
			return "", err
		}
		if cur.State != metadb.JobRunning {
			return "", nil // ended meanwhile
		}
		if cur.Step != metadb.StepCatchup {
			return cur.Step, nil // the keeper recorded it; the runner sees that
		}
		if time.Since(checked) > m.cfg.HoldTime/4 {
			// A keeper that took over copies everything again: keep
			// the writes held (queued) meanwhile rather than failing them.
			checked = time.Now()
			if _, err := m.ensureHold(ctx, f, j, m.cfg.HoldTime/2); err != nil {
				return "", err
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w for the keeper of %s to catch up", errWait, j.Pair)
		}
		if !sleep(ctx, resizePoll) {
			return "", ctx.Err()
		}
	}
}

// resizeSwitch moves the db to its new slot in one fenced transaction: new
// pair, slot, size and quota, state active, hold cleared, version bump,
// RouteChanged then the hold's release (proxies send the held writes to the
// new route). If the hold lapsed first, writes may have reached the old
// slot: the job goes back to hold and catches up again.
func (m *Master) resizeSwitch(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	tp, ts, ok := metadb.ResizeTarget(j)
	if !ok {
		return "", fmt.Errorf("resize %s has no target: %w", j.ID, metadb.ErrBadState)
	}
	target, err := m.store.Pair(ctx, tp)
	if err != nil {
		return "", fmt.Errorf("load pair %s: %w", tp, err)
	}
	quota, _ := strconv.ParseInt(j.Data[metadb.ResizeToQuota], 10, 64)
	_, err = m.store.UpdateDB(ctx, f, m.sender(), j.Tenant, j.Index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		if db.Pair == tp && db.SlotDB == ts {
			return nil, nil // switched by an earlier attempt
		}
		if db.Job != j.ID {
			return nil, fmt.Errorf("db %s/%d belongs to job %s: %w", j.Tenant, j.Index, db.Job, metadb.ErrBadState)
		}
		if db.HoldJob != j.ID || time.Now().Add(m.switchMargin()).After(time.Unix(0, db.HoldUntil)) {
			return nil, errHoldLapsed
		}
		db.Pair, db.SlotDB, db.Size, db.QuotaBytes = tp, ts, j.Data[metadb.ResizeToSize], quota
		db.State, db.HoldJob, db.HoldUntil = metadb.DBActive, "", 0
		if db.UsedBytes <= quota {
			db.Banned = false
		}
		return []*buspb.Envelope{
			routeChanged(metadb.RouteOf(db, target), false),
			{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{Tenant: j.Tenant, Index: uint32(j.Index), Hold: false, Job: j.ID}}},
		}, nil
	})
	if errors.Is(err, errHoldLapsed) {
		m.log.Warn().Str("job", j.ID).Msg("write hold lapsed before the switch: holding again")
		return metadb.StepHold, nil
	}
	if err != nil {
		return "", err
	}
	if _, err := m.recordVersion(ctx, f, j.ID); err != nil {
		return "", err
	}
	return metadb.StepFlushOld, nil
}

// resizeFlushOld empties the old slot once every live proxy has applied the
// switch, so no write can reach it afterwards.
func (m *Master) resizeFlushOld(ctx context.Context, _ *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.waitAcks(ctx, j.Version); err != nil {
		return "", err
	}
	if err := m.flushSlot(ctx, j); err != nil {
		return "", err
	}
	return metadb.StepFreeOld, nil
}

// resizeFreeOld returns the old slot to its free list and ends the job, in
// one transaction.
func (m *Master) resizeFreeOld(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.store.FinishResize(ctx, f, j.ID); err != nil {
		return "", err
	}
	return "", nil
}

package master

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// The master's steps of a rebalance job (metadb/jobspec.go): plan asks
// pools.PlanRebalance for the fewest moves that bring every active pair of
// the pool within rebalanceTolerance of the mean used bytes, and move
// makes them one at a time, each a same-size resize whose target slot is
// on the planned pair (the drain's machinery). Move k is job
// "<rebalance>-m<k>", so a master that takes over finds it instead of
// starting a second move of the db. A move that can no longer be made (the
// db changed state, the target filled up) is skipped, not retried.

// rebalanceTolerance is how far from the mean a pair may stay: a tenth of
// the mean, at least 1 MiB.
func rebalanceTolerance(mean int64) int64 { return max(mean/10, 1<<20) }

func (m *Master) rebalancePlan(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, ok := j.Data[metadb.DrainPlan]; ok {
		return metadb.StepMove, nil
	}
	views, err := m.store.Pairs(ctx, j.Data[metadb.RebalanceSize])
	if err != nil {
		return "", err
	}
	var usage []pools.PairUsage
	var total int64
	live := int64(0)
	for _, v := range views {
		u := pools.PairUsage{ID: v.ID, Live: v.State == metadb.PairActive, Free: v.Free}
		owners, err := m.store.SlotOwners(ctx, v.ID)
		if err != nil {
			return "", err
		}
		for _, o := range owners {
			tenant, idx, _ := strings.Cut(o, "/")
			index, _ := strconv.Atoi(idx)
			db, err := m.store.DB(ctx, tenant, index)
			if errors.Is(err, metadb.ErrNotFound) {
				continue
			}
			if err != nil {
				return "", err
			}
			if db.Pair != v.ID || db.State != metadb.DBActive {
				continue // busy with a job of its own, or a resize's reserved target
			}
			u.DBs = append(u.DBs, pools.DBUsage{ID: o, Bytes: db.UsedBytes})
			if u.Live {
				total += db.UsedBytes
			}
		}
		if u.Live {
			live++
		}
		usage = append(usage, u)
	}
	var plan []string
	if live > 0 {
		for _, mv := range pools.PlanRebalance(usage, rebalanceTolerance(total/live)) {
			plan = append(plan, mv.DB+">"+mv.To)
		}
	}
	_, err = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
		if _, ok := cur.Data[metadb.DrainPlan]; !ok {
			setPlan(cur, plan, 0)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	m.log.Info().Str("job", j.ID).Int("moves", len(plan)).Msg("rebalance planned")
	return metadb.StepMove, nil
}

// rebalanceMove makes the plan's next move, or waits for the one running.
func (m *Master) rebalanceMove(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	plan := planOf(j)
	done, _ := strconv.Atoi(j.Data[metadb.DrainMoved])
	if done >= len(plan) {
		return metadb.StepDone, nil
	}
	o, to, _ := strings.Cut(plan[done], ">")
	tenant, idx, _ := strings.Cut(o, "/")
	index, err := strconv.Atoi(idx)
	if err != nil {
		return "", fmt.Errorf("rebalance %s: bad plan entry %q", j.ID, plan[done])
	}
	id := j.ID + "-m" + strconv.Itoa(done)
	mv, err := m.store.Job(ctx, id)
	if err != nil && !errors.Is(err, metadb.ErrNotFound) {
		return "", err
	}
	finished := mv != nil && mv.State != metadb.JobRunning
	if mv == nil {
		db, err := m.store.DB(ctx, tenant, index)
		switch {
		case errors.Is(err, metadb.ErrNotFound):
			finished = true
		case err != nil:
			return "", err
		case db.State != metadb.DBActive || db.Pair == to:
			finished = true // it changed since the plan: skip it
		default:
			if _, err := m.store.StartMove(ctx, tenant, index, db.Size, db.QuotaBytes, id, to); err != nil {
				if !errors.Is(err, metadb.ErrBadState) {
					return "", err
				}
				finished = true
			} else {
				m.log.Info().Str("job", j.ID).Str("move", id).Str("db", o).Str("to", to).Msg("rebalance: moving db")
			}
		}
	}
	if !finished {
		return "", errWait
	}
	_, err = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
		if cur.Step == metadb.StepMove && cur.Data[metadb.DrainMoved] == strconv.Itoa(done) {
			setPlan(cur, plan, done+1)
			cur.Data[metadb.DrainMoving] = id
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return "", nil // go on with the next move at once
}

package master

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/granary-db/granary/metadb"
)

// The master's steps of a drain job (metadb/jobspec.go): plan lists the
// pair's dbs, move moves them off one at a time with a resize to the size
// each already has (the resize machinery: online copy, writes held only
// at the cut-over, the old slot flushed and freed once every proxy
// acknowledged; its reserve step never picks the source pair, and a
// draining pair is not active, so no db is placed back on it), and
// mark_drained records the empty pair as drained. Each move is a resize
// job of its own, crash-safe as any; the drain keeps the id of the one in
// flight and never starts a second move of a db.

// drainPlan records the dbs the pair owns a slot for.
func (m *Master) drainPlan(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, ok := j.Data[metadb.DrainPlan]; ok {
		return metadb.StepMove, nil
	}
	owners, err := m.store.SlotOwners(ctx, j.Pair)
	if err != nil {
		return "", err
	}
	plan := mergePlan(nil, owners)
	_, err = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
		if cur.Data == nil {
			cur.Data = map[string]string{}
		}
		if _, ok := cur.Data[metadb.DrainPlan]; !ok {
			setPlan(cur, plan, 0)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return metadb.StepMove, nil
}

// mergePlan appends to plan the owners of slots it does not list yet, in
// slot order, so that the plan is the same whoever computes it.
func mergePlan(plan []string, owners map[string]string) []string {
	slots := make([]int, 0, len(owners))
	bySlot := map[int]string{}
	for s, o := range owners {
		n, _ := strconv.Atoi(s)
		slots = append(slots, n)
		bySlot[n] = o
	}
	slices.Sort(slots)
	for _, s := range slots {
		if o := bySlot[s]; !slices.Contains(plan, o) {
			plan = append(plan, o)
		}
	}
	return plan
}

func planOf(j *metadb.Job) []string {
	if p := j.Data[metadb.DrainPlan]; p != "" {
		return strings.Split(p, ",")
	}
	return nil
}

func setPlan(j *metadb.Job, plan []string, moved int) {
	j.Data[metadb.DrainPlan] = strings.Join(plan, ",")
	j.Data[metadb.DrainTotal] = strconv.Itoa(len(plan))
	j.Data[metadb.DrainMoved] = strconv.Itoa(moved)
	frac := 1.0
	if len(plan) > 0 {
		frac = float64(moved) / float64(len(plan))
	}
	j.Progress = metadb.Progress(j.Kind, metadb.StepMove, frac)
}

// drainMove walks the plan: a db off the pair (or dropped) is moved; the
// first one still on it is waited for when a job of its own is running
// (ours or the tenant's) and otherwise gets its move started. It returns
// errWait until every db is off and the pair owns no slot.
func (m *Master) drainMove(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if id := j.Data[metadb.DrainMoving]; id != "" {
		mv, err := m.store.Job(ctx, id)
		if err != nil && !errors.Is(err, metadb.ErrNotFound) {
			return "", err
		}
		if mv != nil && mv.State == metadb.JobFailed {
			why := fmt.Sprintf("move of %s/%d (job %s) failed: %s", mv.Tenant, mv.Index, mv.ID, mv.Error)
			m.log.Warn().Str("job", j.ID).Str("reason", why).Msg("drain stopped")
			return "", m.store.AbortDrain(ctx, f, j.ID, why)
		}
	}
	owners, err := m.store.SlotOwners(ctx, j.Pair)
	if err != nil {
		return "", err
	}
	plan := mergePlan(planOf(j), owners)
	moved, start := 0, -1
	var startDB *metadb.DB
	for i, o := range plan {
		tenant, idx, ok := strings.Cut(o, "/")
		index, err := strconv.Atoi(idx)
		if !ok || err != nil {
			return "", fmt.Errorf("drain %s: bad plan entry %q", j.ID, o)
		}
		db, err := m.store.DB(ctx, tenant, index)
		if errors.Is(err, metadb.ErrNotFound) {
			moved++
			continue
		}
		if err != nil {
			return "", err
		}
		if db.State == metadb.DBActive && db.Pair != j.Pair {
			moved++
			continue
		}
		if start < 0 && db.State == metadb.DBActive {
			start, startDB = i, db // a db busy with another job waits for it
		}
	}
	var moving string
	if start >= 0 && !m.moveRunning(ctx, j) {
		moving = j.ID + "-m" + strconv.Itoa(start)
		// A master that died between starting the move and recording it
		// left the move running, or ended: adopt it (its end is then
		// judged like a recorded move's) rather than start it twice.
		_, err := m.store.Job(ctx, moving)
		switch {
		case errors.Is(err, metadb.ErrNotFound):
			if _, err := m.store.StartMove(ctx, startDB.Tenant, startDB.Index, startDB.Size, startDB.QuotaBytes, moving, ""); err != nil {
				return "", fmt.Errorf("move %s/%d: %w", startDB.Tenant, startDB.Index, err)
			}
			m.log.Info().Str("job", j.ID).Str("move", moving).Str("db", plan[start]).Msg("drain: moving db")
		case err != nil:
			return "", err
		}
	}
	_, err = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
		if cur.State != metadb.JobRunning || cur.Step != metadb.StepMove {
			return nil
		}
		setPlan(cur, plan, moved)
		if moving != "" {
			cur.Data[metadb.DrainMoving] = moving
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if moved == len(plan) && len(owners) == 0 {
		return metadb.StepMarkDrain, nil
	}
	return "", errWait
}

// moveRunning reports whether the drain's last move is still running.
func (m *Master) moveRunning(ctx context.Context, j *metadb.Job) bool {
	id := j.Data[metadb.DrainMoving]
	if id == "" {
		return false
	}
	mv, err := m.store.Job(ctx, id)
	return err == nil && mv.State == metadb.JobRunning
}

// drainMark records the empty pair as drained and ends the job.
func (m *Master) drainMark(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.store.FinishDrain(ctx, f, j.ID); err != nil {
		return "", err
	}
	m.log.Info().Str("job", j.ID).Str("pair", j.Pair).Msg("pair drained")
	return "", nil
}

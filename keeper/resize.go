package keeper

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
)

// The keeper's steps of a resize job (see metadb/jobspec.go and
// master/resize.go for the whole job). The keeper of the source pair runs
// copy as one session that lasts until the copy is verified: it copies,
// records hold and keeps the copy in step while the master holds the db's
// writes, then, as soon as the master records catchup, applies the last
// changes, verifies and records switch. A keeper that finds the job at
// catchup without that session (it restarted) copies everything again under
// the hold.

// Pace of the session's wait for the master's steps, and the digest sample.
const (
	resizePoll   = 2 * time.Millisecond
	verifySample = 200
)

// jobReader is the optional metadb call the session polls the job with.
type jobReader interface {
	Job(ctx context.Context, id string) (*metadb.Job, error)
}

func (k *Keeper) loadJob(ctx context.Context, id string) (*metadb.Job, error) {
	if r, ok := k.store.(jobReader); ok {
		return r.Job(ctx, id)
	}
	jobs, err := k.store.ActiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.ID == id {
			return j, nil
		}
	}
	return nil, fmt.Errorf("job %s: %w", id, metadb.ErrNotFound)
}

// resizeEnds are the source and target of a resize job.
type resizeEnds struct {
	srcAddr, dstAddr string
	srcReplica       string // the source pair's replica, "" when it has none
	srcDB, dstDB     int
}

func (k *Keeper) resizeEnds(ctx context.Context, j *metadb.Job) (resizeEnds, error) {
	tp, ts, ok := metadb.ResizeTarget(j)
	if !ok {
		return resizeEnds{}, fmt.Errorf("resize %s has no target yet", j.ID)
	}
	pairs, err := k.store.Pairs(ctx, "")
	if err != nil {
		return resizeEnds{}, err
	}
	e := resizeEnds{srcDB: j.SlotDB, dstDB: ts}
	for _, p := range pairs {
		switch p.ID {
		case j.Pair:
			e.srcAddr, e.srcReplica = p.Master, p.Replica
		case tp:
			e.dstAddr = p.Master
		}
	}
	if e.srcAddr == "" || e.dstAddr == "" {
		return resizeEnds{}, fmt.Errorf("resize %s: pair %s or %s unknown", j.ID, j.Pair, tp)
	}
	return e, nil
}

// resizeCopy is the copy session (see above). It returns the step it
// recorded last; any error leaves the job where it is, to be retried (a new
// copy starts from scratch, an interrupted one at hold or catchup is
// redone by resizeCatchup).
func (k *Keeper) resizeCopy(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	e, err := k.resizeEnds(ctx, j)
	if err != nil {
		return "", err
	}
	s, err := openCopy(ctx, e.srcAddr, e.srcReplica, e.srcDB, e.dstAddr, e.dstDB, true)
	if err != nil {
		return "", err
	}
	defer s.close()
	s.owner = k.ownsResize
	// The setting from before the first attempt is the one to restore: a
	// keeper that crashed mid-copy left notifications on.
	if v, ok := j.Data[metadb.ResizeNotifyBefore]; ok {
		s.notifyBefore = v
	} else if _, err := k.store.UpdateJob(ctx, nil, j.ID, func(cur *metadb.Job) error {
		if _, ok := cur.Data[metadb.ResizeNotifyBefore]; !ok && cur.Data != nil {
			cur.Data[metadb.ResizeNotifyBefore] = s.notifyBefore
		}
		return nil
	}); err != nil {
		return "", err
	}
	start := time.Now()
	total, avg := s.sizeOf(ctx)
	s.onCopy = k.metrics.copied(avg)
	var lastReport time.Time
	report := func(keys int64) {
		if time.Since(lastReport) < 200*time.Millisecond {
			return
		}
		lastReport = time.Now()
		k.recordCopied(ctx, j.ID, keys, total, avg)
	}
	scanStart := time.Now()
	if err := s.fullCopy(ctx, report); err != nil {
		return "", err
	}
	scanTook := time.Since(scanStart)
	// Passes over the keys dirtied meanwhile, each shorter than the last
	// while writes are light, so that little is left for the hold.
	redone := 0
	for pass := 0; pass < 8; pass++ {
		n, err := s.drain(ctx)
		if err != nil {
			return "", err
		}
		if redone += n; n < 100 {
			break
		}
	}
	took := time.Since(start)
	copied, _ := s.src.DBSize(ctx).Result()
	k.log.Info().Str("job", j.ID).Int64("keys", copied).Dur("took", took).Dur("scan_copy", scanTook).
		Int("dirty_recopied", redone).Msg("resize copy done")
	if ok, err := k.advance(ctx, j.ID, metadb.StepCopy, metadb.StepHold, func(cur *metadb.Job) {
		setCopied(cur, copied, copied, avg)
		cur.Data[metadb.ResizeCopyMillis] = strconv.FormatFloat(float64(took.Microseconds())/1000, 'f', 1, 64)
	}); err != nil || !ok {
		return "", err
	}
	// Keep the copy in step until the master holds the writes.
	t := time.NewTicker(resizePoll)
	defer t.Stop()
	for {
		if err := k.ownsResize(); err != nil {
			return "", err
		}
		if _, err := s.drain(ctx); err != nil {
			return "", err
		}
		cur, err := k.loadJob(ctx, j.ID)
		if err != nil {
			return "", err
		}
		if cur.State != metadb.JobRunning {
			return "", nil
		}
		switch cur.Step {
		case metadb.StepHold:
		case metadb.StepCatchup:
			if err := k.finishCopy(ctx, s, cur.ID); err != nil {
				return "", err
			}
			return metadb.StepSwitch, nil
		default:
			return "", fmt.Errorf("resize %s moved to %s during the copy", cur.ID, cur.Step)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// finishCopy applies the last changes with writes held, verifies, waits for
// the target's replica and records switch.
func (k *Keeper) finishCopy(ctx context.Context, s *copySession, id string) error {
	start := time.Now()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.barrier(ctx); err != nil {
			return err
		}
		if _, err = s.drain(ctx); err != nil {
			return err
		}
		if err = s.verify(ctx, verifySample); err == nil {
			break
		}
		if !errors.Is(err, errMismatch) {
			return err
		}
	}
	if err != nil {
		return err
	}
	if err := s.waitReplica(ctx, 5*time.Second); err != nil {
		return err
	}
	ok, err := k.advance(ctx, id, metadb.StepCatchup, metadb.StepSwitch, nil)
	if err == nil && ok {
		k.log.Info().Str("job", id).Dur("took", time.Since(start)).Msg("resize caught up and verified")
	}
	return err
}

// resizeCatchup runs when the job is at catchup and this keeper has no
// copy session for it (it took over, or restarted): writes are held, so a
// full copy from scratch is exact.
func (k *Keeper) resizeCatchup(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	e, err := k.resizeEnds(ctx, j)
	if err != nil {
		return "", err
	}
	s, err := openCopy(ctx, e.srcAddr, e.srcReplica, e.srcDB, e.dstAddr, e.dstDB, false)
	if err != nil {
		return "", err
	}
	defer s.close()
	s.owner = k.ownsResize
	total, avg := s.sizeOf(ctx)
	s.onCopy = k.metrics.copied(avg)
	if err := s.fullCopy(ctx, func(keys int64) { k.recordCopied(ctx, j.ID, keys, total, avg) }); err != nil {
		return "", err
	}
	for attempt := 0; ; attempt++ {
		err = s.verify(ctx, verifySample)
		if err == nil || attempt == 3 || !errors.Is(err, errMismatch) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return "", err
	}
	if err := s.waitReplica(ctx, 5*time.Second); err != nil {
		return "", err
	}
	if v, ok := j.Data[metadb.ResizeNotifyBefore]; ok {
		restoreNotify(ctx, s.src, e.srcAddr, v)
	}
	k.log.Info().Str("job", j.ID).Msg("resize copied again under the hold and verified")
	return metadb.StepSwitch, nil
}

// errLeaseLapsed: the keeper's lease lapsed, so its pairs may be another
// keeper's now.
var errLeaseLapsed = errors.New("keeper lease lapsed during a resize")

// ownsResize fences the copy: a keeper whose lease lapsed stops writing.
func (k *Keeper) ownsResize() error {
	if !k.leased() {
		return errLeaseLapsed
	}
	return nil
}

// sizeOf is the source db's key count and mean key size (sampled), for the
// bytes-copied estimate.
func (s *copySession) sizeOf(ctx context.Context) (keys, avg int64) {
	keys, _ = s.src.DBSize(ctx).Result()
	sample, err := randomKeys(ctx, s.read, 32)
	if err != nil || len(sample) == 0 {
		return keys, 0
	}
	var sum int64
	for _, key := range sample {
		n, _ := s.read.MemoryUsage(ctx, key).Result()
		sum += n
	}
	return keys, sum / int64(len(sample))
}

func setCopied(j *metadb.Job, keys, total, avg int64) {
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	j.Data[metadb.ResizeKeysCopied] = strconv.FormatInt(keys, 10)
	j.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(total, 10)
	j.Data[metadb.ResizeBytesCopied] = strconv.FormatInt(keys*avg, 10)
	j.Data[metadb.ResizeBytesTotal] = strconv.FormatInt(total*avg, 10)
}

// recordCopied records copy progress while the job is at its copy step:
// the step's share of the bar moves with the keys copied.
func (k *Keeper) recordCopied(ctx context.Context, id string, keys, total, avg int64) {
	_, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		if cur.Step != metadb.StepCopy && cur.Step != metadb.StepCatchup {
			return nil
		}
		setCopied(cur, keys, total, avg)
		if cur.Step == metadb.StepCopy && total > 0 {
			cur.Progress = metadb.Progress(cur.Kind, cur.Step, float64(keys)/float64(total))
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		k.log.Warn().Err(err).Str("job", id).Msg("record copy progress failed")
	}
}

// advance records step from -> to (with fn's changes) if the job is still
// at from; ok is false when it had moved.
func (k *Keeper) advance(ctx context.Context, id string, from, to metadb.Step, fn func(*metadb.Job)) (ok bool, err error) {
	_, err = k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		ok = false
		if cur.Step != from || cur.State != metadb.JobRunning {
			return nil
		}
		if fn != nil {
			fn(cur)
		}
		ok = cur.Advance(from, to, k.sender(), time.Now())
		return nil
	})
	return ok, err
}

package keeper

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/internal/importsrc"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// The keeper's steps of an import job (see metadb/jobspec.go and
// master/import.go). The keeper of the target db's pair runs sync as one
// session: a full pass, then the dirty keys as they come, until the
// tenant asks for the cut-over (or cancels); then, in the same session, it
// records cutover, waits for the PING barrier, applies the last changes,
// verifies, waits for the target's replica and records release. A broken
// session (lost subscription, dirty-set overflow, a restart) begins again
// with a new full pass, at sync or at cutover alike.

// Pace of an import session.
const (
	importPoll     = 20 * time.Millisecond  // dirty keys applied, job re-read
	importReport   = 250 * time.Millisecond // progress recorded at most this often
	importInStep   = importBatch            // dirty keys pending at most, to be "in step"
	importVerifyOf = 200                    // keys whose DUMP is compared at the cut-over
)

// importStore is what an import needs of metadb beyond Store: the
// addresses a source may never be.
type importStore interface {
	Spares(ctx context.Context) ([]string, error)
	MetadbAddrs(ctx context.Context) []string
}

// importSync is the sync step: a whole session (see above).
func (k *Keeper) importSync(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	return k.runImport(ctx, j, false)
}

// importCutover runs when the job is at cutover and this keeper has no
// session for it (it took over, or the session broke): a new full pass,
// then the cut-over at once, since the tenant asked for it.
func (k *Keeper) importCutover(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	return k.runImport(ctx, j, true)
}

// importEnds connects to the job's source, through the guard, and its
// target slot.
func (k *Keeper) importEnds(ctx context.Context, j *metadb.Job) (src, dst *redis.Client, srcDB int, err error) {
	srcDB, _ = strconv.Atoi(j.Data[metadb.ImportSourceDB])
	source := importsrc.Source{Addr: strings.TrimPrefix(j.Data[metadb.ImportSource], "redis://"),
		User: j.Data[metadb.ImportUser], Password: j.Data[metadb.ImportPassword], DB: srcDB}
	is, ok := k.store.(importStore)
	if !ok {
		return nil, nil, 0, errors.New("this keeper's store cannot list the cluster's servers")
	}
	pairs, err := k.store.Pairs(ctx, "")
	if err != nil {
		return nil, nil, 0, err
	}
	spares, err := is.Spares(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	proxies, err := k.store.LiveMembers(ctx, metadb.KindProxy)
	if err != nil {
		return nil, nil, 0, err
	}
	deny := append(is.MetadbAddrs(ctx), spares...)
	for _, m := range proxies {
		deny = append(deny, m.Addr)
	}
	target := ""
	for _, p := range pairs {
		deny = append(deny, p.Master, p.Replica)
		if p.ID == j.Pair {
			target = p.Master
		}
	}
	if target == "" {
		return nil, nil, 0, fmt.Errorf("import %s: pair %s unknown", j.ID, j.Pair)
	}
	g, err := importsrc.NewGuard(importsrc.SplitAllow(k.cfg.ImportAllow), deny)
	if err != nil {
		return nil, nil, 0, err
	}
	return source.Client(g, 4), newDBClient(target, j.SlotDB), srcDB, nil
}

// runImport is one session; cutover says the tenant asked for the
// cut-over already. Its errors never hold the source's password (the
// clients' errors name addresses, not credentials).
func (k *Keeper) runImport(ctx context.Context, j *metadb.Job, cutover bool) (next metadb.Step, err error) {
	if j.Data[metadb.ImportCancelAt] != "" {
		return k.cancelImport(ctx, j.ID, j.Step)
	}
	defer func() {
		// The job's error is the tenant's to read: the slot's server
		// stays unnamed there, and its error goes to the log.
		var te *targetError
		var ne net.Error
		switch {
		case errors.As(err, &te):
			k.log.Warn().Err(te.cause).Str("job", j.ID).Msg("import write to the slot failed")
		case errors.As(err, &ne):
			// A network error names this keeper's own address too.
			k.log.Warn().Err(err).Str("job", j.ID).Msg("import lost the source")
			err = fmt.Errorf("%w: the connection broke (the import retries)", importsrc.ErrUnreachable)
		}
	}()
	src, dst, srcDB, err := k.importEnds(ctx, j)
	if err != nil {
		return "", err
	}
	defer src.Close()
	defer dst.Close()
	if err := src.Ping(ctx).Err(); err != nil {
		return "", fmt.Errorf("source: %w", importsrc.Classify(err))
	}
	cfg, err := src.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err == nil && !importsrc.NotifyOn(cfg["notify-keyspace-events"]) {
		return "", importsrc.ErrNotify
	}
	s, err := openImport(ctx, src, dst, srcDB)
	if err != nil {
		return "", err
	}
	defer s.close()
	s.owner = k.ownsResize
	if err := src.Do(ctx, "PEXPIRETIME", "__granary:probe").Err(); err != nil && !errors.Is(err, redis.Nil) {
		s.noExpireTime = true
	}
	start := time.Now()
	total, _ := src.DBSize(ctx).Result()
	var last time.Time
	report := func(copied int64) error {
		if time.Since(last) < importReport {
			return nil
		}
		last = time.Now()
		if cur := k.recordImport(ctx, j.ID, copied, total, s.pending(), false); cur != nil && cur.Data[metadb.ImportCancelAt] != "" {
			return errImportCancelled
		}
		return nil
	}
	if err := s.fullPass(ctx, report); errors.Is(err, errImportCancelled) {
		return k.cancelImport(ctx, j.ID, j.Step)
	} else if err != nil {
		return "", err
	}
	if _, err := s.drain(ctx); err != nil {
		return "", err
	}
	copied, _ := dst.DBSize(ctx).Result()
	total = max(total, copied)
	_ = k.recordImport(ctx, j.ID, copied, total, s.pending(), true)
	k.log.Info().Str("job", j.ID).Int64("keys", copied).Dur("took", time.Since(start)).Msg("import full pass done")
	if !cutover {
		next, err := k.followImport(ctx, s, j.ID)
		if err != nil || next != metadb.StepCutover {
			return next, err
		}
	}
	return k.finishImport(ctx, s, j.ID)
}

// followImport keeps the target in step until the tenant asks for the
// cut-over (it returns StepCutover, recorded) or cancels (StepRelease,
// recorded), or the job moved on without it ("").
func (k *Keeper) followImport(ctx context.Context, s *importSession, id string) (metadb.Step, error) {
	t := time.NewTicker(importPoll)
	defer t.Stop()
	var last time.Time
	for {
		if _, err := s.drain(ctx); err != nil {
			return "", err
		}
		if time.Since(last) >= importReport {
			last = time.Now()
			cur, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
				if cur.Step == metadb.StepSync && cur.State == metadb.JobRunning {
					setImportProgress(cur, -1, -1, s.pending(), true)
				}
				return nil
			})
			if err != nil {
				return "", err
			}
			switch {
			case cur.State != metadb.JobRunning || cur.Step != metadb.StepSync:
				return "", nil
			case cur.Data[metadb.ImportCancelAt] != "":
				return k.cancelImport(ctx, id, metadb.StepSync)
			case cur.Data[metadb.ImportCutoverAt] != "":
				ok, err := k.advance(ctx, id, metadb.StepSync, metadb.StepCutover, nil)
				if err != nil || !ok {
					return "", err
				}
				return metadb.StepCutover, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-t.C:
		}
	}
}

// finishImport is the cut-over: barrier, last changes, verification, the
// target's replica; then it records release.
func (k *Keeper) finishImport(ctx context.Context, s *importSession, id string) (metadb.Step, error) {
	start := time.Now()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.barrier(ctx); err != nil {
			return "", err
		}
		if _, err = s.drain(ctx); err != nil {
			return "", err
		}
		if err = s.verify(ctx, importVerifyOf); err == nil || !errors.Is(err, errImportMismatch) {
			break
		}
	}
	if err != nil {
		return "", err
	}
	if err := waitTargetReplica(ctx, s.dst, 5*time.Second); err != nil {
		return "", err
	}
	n, _ := s.dst.DBSize(ctx).Result()
	ok, err := k.advance(ctx, id, metadb.StepCutover, metadb.StepRelease, func(cur *metadb.Job) {
		setImportProgress(cur, n, n, 0, true)
	})
	if err != nil || !ok {
		return "", err
	}
	k.log.Info().Str("job", id).Int64("keys", n).Dur("took", time.Since(start)).Msg("import cut over and verified")
	return metadb.StepRelease, nil
}

// errImportCancelled: the tenant cancelled the import during a full pass.
var errImportCancelled = errors.New("import cancelled")

// cancelImport hands a cancelled import (at sync or cutover) to the
// master's release, which ends it.
func (k *Keeper) cancelImport(ctx context.Context, id string, at metadb.Step) (metadb.Step, error) {
	ok, err := k.advance(ctx, id, at, metadb.StepRelease, nil)
	if err == nil && ok {
		k.log.Info().Str("job", id).Msg("import cancelled")
	}
	return metadb.StepRelease, err
}

// recordImport records a session's progress while the job is at sync or
// cutover, and returns the job as recorded (nil on failure).
func (k *Keeper) recordImport(ctx context.Context, id string, copied, total int64, dirty int, inStep bool) *metadb.Job {
	cur, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		if cur.State != metadb.JobRunning || (cur.Step != metadb.StepSync && cur.Step != metadb.StepCutover) {
			return nil
		}
		setImportProgress(cur, copied, total, dirty, inStep)
		if cur.Step == metadb.StepSync && total > 0 {
			cur.Progress = metadb.Progress(cur.Kind, cur.Step, float64(min(copied, total))/float64(total))
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		k.log.Warn().Err(err).Str("job", id).Msg("record import progress failed")
	}
	return cur
}

// setImportProgress writes an import's progress fields; negative copied
// and total leave those as they are. A call is made right after the dirty
// keys were applied, so it is also the time of the last change applied.
func setImportProgress(j *metadb.Job, copied, total int64, dirty int, inStep bool) {
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	if copied >= 0 {
		j.Data[metadb.ResizeKeysCopied] = strconv.FormatInt(copied, 10)
	}
	if total >= 0 {
		j.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(total, 10)
	}
	j.Data[metadb.ImportDirty] = strconv.Itoa(dirty)
	j.Data[metadb.ImportLastApply] = strconv.FormatInt(time.Now().UnixMilli(), 10)
	if inStep && dirty <= importInStep {
		j.Data[metadb.ImportInStep] = "true"
	} else {
		j.Data[metadb.ImportInStep] = "false"
	}
}

package keeper

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/metadb"
)

// The keeper's steps of a restore job (see metadb/jobspec.go and
// master/import.go's readOnlyFor and release). Both run on a scratch
// server loaded from the job's file (scratch.go), started anew by every
// attempt, so a keeper that dies mid-step leaves nothing that the next
// attempt depends on.
//
//   - check: the file is whole (magic, version, EOF, CRC-64) and loads
//     (else the job is refused as corrupt, with Redis's reason), and db 0 of the file, measured exactly with the
//     keeper's own sizing (the measure that enforces the quota), fits the
//     db's quota (else refused as too big). Nothing is written to the db.
//   - load: the db's slot is flushed and every key of db 0 is copied with
//     DUMP + PEXPIRETIME → RESTORE … ABSTTL REPLACE in pipelines of at
//     most restoreChunk bytes; the key count is verified and the slot's
//     replica confirms it (WAIT) before release is recorded.
//
// Only db 0 of a file is restored: its other dbs' keys are counted
// (ignored_keys) and left out, and the job says so.
//
// An uploaded file is deleted once the job no longer needs it: when check
// refuses it, and when load finished, just before it records release. An
// export's file is never deleted by a restore.

// restoreChunk bounds the bytes (MEMORY USAGE) of one DUMP/RESTORE
// pipeline of a load; a bigger key goes alone.
const restoreChunk = 8 << 20

// scratchMemLimit is the address space a restore's scratch server may
// take: data that fits the db's quota loads well within it.
func scratchMemLimit(quota int64) int64 { return 4*quota + scratchBase }

// scratchBase is the address space a scratch server may take beyond 4 ×
// the quota: the server itself (about 60 MiB idle) and its allocator's
// slack. A variable so that a test can lower it.
var scratchBase int64 = 512 << 20

// restoreCheck is the check step.
func (k *Keeper) restoreCheck(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	if k.cfg.Store == nil {
		return "", errors.New("this keeper has no object store (--store): it cannot read the file")
	}
	db, err := k.store.DB(ctx, j.Tenant, j.Index)
	if errors.Is(err, metadb.ErrNotFound) {
		return k.refuseRestore(ctx, j, "", "the db was dropped")
	}
	if err != nil {
		return "", err
	}
	start := time.Now()
	s, err := startScratch(ctx, k.cfg.RedisServer, k.cfg.Store, j.Data[metadb.RestoreObject], scratchMemLimit(db.QuotaBytes))
	switch {
	case errors.Is(err, rdbfile.ErrCorrupt):
		return k.refuseRestore(ctx, j, metadb.RestoreCorrupt, err.Error())
	case errors.Is(err, errFileRefused):
		return k.refuseRestore(ctx, j, metadb.RestoreCorrupt, "corrupt RDB: "+err.Error())
	case errors.Is(err, errFileTooBig):
		return k.refuseRestore(ctx, j, metadb.RestoreTooBig, fmt.Sprintf("%v; the db's size is %s: resize first", err, db.Size))
	case errors.Is(err, objstore.ErrNotFound):
		return k.refuseRestore(ctx, j, "", "the RDB file is gone from the store")
	case err != nil:
		return "", err
	}
	defer s.close()
	m, err := k.sizing.measure(ctx, s.client, 0, true, nil, 0)
	if err != nil {
		return "", fmt.Errorf("measure the file's data: %w", err)
	}
	ignored, err := s.otherDBKeys(ctx)
	if err != nil {
		return "", err
	}
	k.log.Info().Str("job", j.ID).Int64("used_bytes", m.Bytes).Int64("keys", m.Keys).Int64("ignored_keys", ignored).
		Int64("quota", db.QuotaBytes).Dur("took", time.Since(start)).Msg("restore file checked")
	if m.Bytes > db.QuotaBytes {
		return k.refuseRestore(ctx, j, metadb.RestoreTooBig, fmt.Sprintf(
			"the RDB's data takes %s; the db's size is %s: resize first", megabytes(m.Bytes), db.Size))
	}
	ok, err := k.advance(ctx, j.ID, metadb.StepCheck, metadb.StepReadOnly, func(cur *metadb.Job) {
		cur.Data[metadb.RestoreUsedBytes] = strconv.FormatInt(m.Bytes, 10)
		cur.Data[metadb.RestoreIgnoredKeys] = strconv.FormatInt(ignored, 10)
		cur.Data[metadb.ResizeBytesTotal] = strconv.FormatInt(m.Bytes, 10)
		cur.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(m.Keys, 10)
	})
	if err != nil || !ok {
		return "", err
	}
	return metadb.StepReadOnly, nil
}

// megabytes shows n bytes in MB with one decimal.
func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// errJobEnded: the step ended the job itself; nothing is left to record.
var errJobEnded = errors.New("job ended by its step")

// refuseRestore ends the job at check as failed (refusal "" for a failure
// that is no verdict on the file) and deletes an uploaded file.
func (k *Keeper) refuseRestore(ctx context.Context, j *metadb.Job, refusal, why string) (metadb.Step, error) {
	cur, err := k.store.RefuseRestore(ctx, j.ID, refusal, why)
	if err != nil {
		return "", err
	}
	if cur.State != metadb.JobRunning {
		k.log.Info().Str("job", j.ID).Str("refusal", refusal).Str("reason", why).Msg("restore refused")
		k.dropUpload(ctx, cur)
	}
	return "", errJobEnded
}

// dropUpload deletes the job's file if the tenant uploaded it.
func (k *Keeper) dropUpload(ctx context.Context, j *metadb.Job) {
	if j.Data[metadb.RestoreFrom] != metadb.RestoreFromUpload || k.cfg.Store == nil {
		return
	}
	if err := k.cfg.Store.Delete(ctx, j.Data[metadb.RestoreObject]); err != nil {
		k.log.Warn().Err(err).Str("job", j.ID).Msg("delete uploaded RDB failed")
	}
}

// restoreLoad is the load step.
func (k *Keeper) restoreLoad(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	if k.cfg.Store == nil {
		return "", errors.New("this keeper has no object store (--store): it cannot read the file")
	}
	db, err := k.store.DB(ctx, j.Tenant, j.Index)
	if err != nil {
		return "", err
	}
	p, err := k.store.Pair(ctx, j.Pair)
	if err != nil {
		return "", fmt.Errorf("load pair %s: %w", j.Pair, err)
	}
	start := time.Now()
	s, err := startScratch(ctx, k.cfg.RedisServer, k.cfg.Store, j.Data[metadb.RestoreObject], scratchMemLimit(db.QuotaBytes))
	if errors.Is(err, objstore.ErrNotFound) {
		return k.loadGone(ctx, j)
	}
	if err != nil {
		return "", err
	}
	defer s.close()
	dst := newDBClient(p.Master, j.SlotDB)
	defer dst.Close()
	c := &importSession{src: s.client, dst: dst, owner: k.ownsResize}
	total, err := s.client.DBSize(ctx).Result()
	if err != nil {
		return "", err
	}
	bytesTotal, _ := strconv.ParseInt(j.Data[metadb.ResizeBytesTotal], 10, 64)
	var last time.Time
	report := func(keys, bytes int64) {
		if time.Since(last) < importReport {
			return
		}
		last = time.Now()
		k.recordRestore(ctx, j.ID, keys, total, bytes, bytesTotal)
	}
	keys, bytes, err := loadKeys(ctx, c, report)
	if err != nil {
		return "", err
	}
	n, err := dst.DBSize(ctx).Result()
	if err != nil {
		return "", &targetError{err}
	}
	if want := s.client.DBSize(ctx).Val(); n != want {
		return "", fmt.Errorf("the db holds %d keys after the load, the file %d (the load retries)", n, want)
	}
	// The replica applies what the load wrote at its own pace: a timeout
	// would make the next attempt copy it all again, so allow for it.
	if err := waitTargetReplica(ctx, dst, 30*time.Second+time.Duration(bytes/(10<<20))*time.Second); err != nil {
		return "", err
	}
	took := time.Since(start)
	// An upload is deleted before release is recorded, so none is left
	// behind by a crash in between: a load that then finds it gone knows
	// an earlier attempt finished (loadGone).
	k.dropUpload(ctx, j)
	ok, err := k.advance(ctx, j.ID, metadb.StepLoad, metadb.StepRelease, func(cur *metadb.Job) {
		setRestoreProgress(cur, n, n, bytes, bytes)
		cur.Data[metadb.ResizeCopyMillis] = strconv.FormatInt(took.Milliseconds(), 10)
	})
	if err != nil || !ok {
		return "", err
	}
	k.log.Info().Str("job", j.ID).Int64("keys", keys).Int64("bytes", bytes).Dur("took", took).Msg("restore loaded and verified")
	k.sched.add(dbKey{j.Tenant, j.Index}, reasonWritten, time.Now())
	return metadb.StepRelease, nil
}

// loadGone is a load whose file is gone. An upload is deleted only by a
// load that finished (verified, the replica confirmed) just before it
// records release: that load's work stands, and release is recorded now.
// An export the tenant deleted meanwhile ends the restore: the db gets its
// writes back and the job ends failed, saying what the db holds.
func (k *Keeper) loadGone(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	ok, err := k.advance(ctx, j.ID, metadb.StepLoad, metadb.StepRelease, func(cur *metadb.Job) {
		if cur.Data[metadb.RestoreFrom] == metadb.RestoreFromUpload {
			return
		}
		cur.Data[metadb.RestoreFailure] = "the export was deleted before the load finished: the db holds " +
			"part of it, or its old data if the load had not begun; restore it again from another file"
	})
	if err != nil || !ok {
		return "", err
	}
	return metadb.StepRelease, nil
}

// loadKeys empties the target and copies every key of the source (db 0
// of the scratch server) into it, in pipelines of at most restoreChunk
// bytes; progress gets the keys and bytes copied so far.
func loadKeys(ctx context.Context, c *importSession, progress func(keys, bytes int64)) (keys, bytes int64, err error) {
	if err := c.owner(); err != nil {
		return 0, 0, err
	}
	if err := c.dst.FlushDB(ctx).Err(); err != nil {
		return 0, 0, &targetError{err}
	}
	var cursor uint64
	for {
		batch, next, err := c.src.Scan(ctx, cursor, "", importBatch).Result()
		if err != nil {
			return keys, bytes, fmt.Errorf("scan the file's data: %w", err)
		}
		sizes, err := memoryUsage(ctx, c.src, batch, 0)
		if err != nil {
			return keys, bytes, err
		}
		var chunk []string
		var chunkBytes int64
		flush := func() error {
			if err := c.copyKeys(ctx, chunk); err != nil {
				return err
			}
			keys += int64(len(chunk))
			bytes += chunkBytes
			chunk, chunkBytes = chunk[:0], 0
			progress(keys, bytes)
			return nil
		}
		for i, key := range batch {
			if sizes[i] < 0 {
				continue // expired since SCAN saw it
			}
			if len(chunk) > 0 && chunkBytes+sizes[i] > restoreChunk {
				if err := flush(); err != nil {
					return keys, bytes, err
				}
			}
			chunk = append(chunk, key)
			chunkBytes += sizes[i]
		}
		if len(chunk) > 0 {
			if err := flush(); err != nil {
				return keys, bytes, err
			}
		}
		if cursor = next; cursor == 0 {
			return keys, bytes, nil
		}
	}
}

// recordRestore records a load's progress while the job is at load.
func (k *Keeper) recordRestore(ctx context.Context, id string, keys, keysTotal, bytes, bytesTotal int64) {
	_, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		if cur.State != metadb.JobRunning || cur.Step != metadb.StepLoad {
			return nil
		}
		setRestoreProgress(cur, keys, keysTotal, bytes, bytesTotal)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		k.log.Warn().Err(err).Str("job", id).Msg("record restore progress failed")
	}
}

// setRestoreProgress writes a load's progress fields and the job's
// progress (by bytes) within load.
func setRestoreProgress(j *metadb.Job, keys, keysTotal, bytes, bytesTotal int64) {
	if j.Data == nil {
		j.Data = map[string]string{}
	}
	j.Data[metadb.ResizeKeysCopied] = strconv.FormatInt(keys, 10)
	j.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(keysTotal, 10)
	j.Data[metadb.ResizeBytesCopied] = strconv.FormatInt(bytes, 10)
	j.Data[metadb.ResizeBytesTotal] = strconv.FormatInt(max(bytes, bytesTotal), 10)
	if bytesTotal > 0 && j.Step == metadb.StepLoad {
		j.Progress = metadb.Progress(j.Kind, j.Step, float64(min(bytes, bytesTotal))/float64(bytesTotal))
	}
}

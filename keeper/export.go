package keeper

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// The keeper's step of an export job (see metadb/exports.go). The keeper
// of the db's pair reads the db from the pair's REPLICA (the master only
// when the pair has no replica in sync), so the master's clients never
// wait on it: it first waits until the replica has processed the master's
// replication offset as of the dump's start, so every write acknowledged
// before the export was asked for is in the file. Then it walks the db's
// slot with SCAN and reads the keys in byte-bounded pipelines of DUMP +
// PEXPIRETIME (the sizes come from inspectKeys, as in a resize), several
// SCAN batches at once, and streams them through an rdbfile.Writer into
// the object store's Put: memory holds a few batches and one 16-byte
// fingerprint per key (SCAN may return a key twice, and redis-server
// refuses a file with a key twice), never the db. A key gone or expired
// between the SCAN and its reads is left out.
//
// Each key is as it was when the replica was read for it: the file is not
// a point-in-time snapshot of the whole db, but every key present from the
// start to the end of the dump is in it. A dump interrupted (a keeper
// restart, a lost connection) starts again from the beginning; the store
// shows a name only once its object is whole, so no half file is visible.

// Pace of a dump.
const (
	exportReport  = 250 * time.Millisecond // progress recorded at most this often
	exportWorkers = 6                      // SCAN batches read at once: the reads are round-trip bound (3 gave half the keys/s)
)

// errExportGone: the export was deleted (or ended) while its dump ran.
var errExportGone = errors.New("the export was deleted")

// exportDump is the dump step.
func (k *Keeper) exportDump(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
	store := k.cfg.Store
	if store == nil {
		return "", errors.New("this keeper has no object store to write exports to (start it with --store)")
	}
	object := j.Data[metadb.ExportObject]
	if err := objstore.CheckName(object); err != nil {
		return "", err
	}
	p, err := k.store.Pair(ctx, j.Pair)
	if err != nil {
		return "", fmt.Errorf("load pair %s: %w", j.Pair, err)
	}
	master := newDBClient(p.Master, j.SlotDB)
	defer master.Close()
	read := master
	if p.Replica != "" {
		r := newDBClient(p.Replica, j.SlotDB)
		defer r.Close()
		if readsFromReplica(ctx, master, r) {
			if err := syncReplica(ctx, master, r); err != nil {
				return "", err
			}
			read = r
		}
	}
	start := time.Now()
	total, err := read.DBSize(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("count the db's keys: %w", err)
	}

	pr, pw := io.Pipe()
	type putResult struct {
		info objstore.Info
		err  error
	}
	put := make(chan putResult, 1)
	go func() {
		info, err := store.Put(ctx, object, pr)
		_ = pr.CloseWithError(err)
		put <- putResult{info, err}
	}()
	w := rdbfile.NewWriter(pw)
	var last time.Time
	d := &dumper{read: read, w: w, owner: k.ownsResize, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
		seen: map[[2]uint64]struct{}{}}
	d.report = func() error {
		if time.Since(last) < exportReport {
			return nil
		}
		last = time.Now()
		return k.recordExport(ctx, j.ID, w.Keys(), total, w.Bytes())
	}
	err = d.run(ctx)
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		_ = pw.CloseWithError(err)
		<-put
		if errors.Is(err, errExportGone) {
			return "", errWaitStep // nothing to record: the job has ended
		}
		return "", err
	}
	_ = pw.Close()
	res := <-put
	if res.err != nil {
		return "", fmt.Errorf("store the export: %w", res.err)
	}
	took := time.Since(start)
	set := func(cur *metadb.Job) {
		cur.Data[metadb.ExportSize] = strconv.FormatInt(res.info.Size, 10)
		cur.Data[metadb.ExportSHA256] = res.info.SHA256
		cur.Data[metadb.ResizeBytesCopied] = strconv.FormatInt(res.info.Size, 10)
		cur.Data[metadb.ResizeKeysCopied] = strconv.FormatInt(w.Keys(), 10)
		cur.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(max(total, w.Keys()), 10)
		cur.Data[metadb.ResizeCopyMillis] = strconv.FormatInt(took.Milliseconds(), 10)
	}
	if err := k.ownsResize(); err != nil {
		return "", err
	}
	ok, err := k.advance(ctx, j.ID, metadb.StepDump, metadb.StepDone, func(cur *metadb.Job) {
		if cur.Data == nil {
			cur.Data = map[string]string{}
		}
		set(cur)
	})
	if err != nil {
		return "", err
	}
	if !ok {
		return "", k.exportRaced(ctx, j.ID, object, set)
	}
	k.log.Info().Str("job", j.ID).Int64("keys", w.Keys()).Int64("bytes", res.info.Size).Dur("took", took).
		Bool("from_replica", read != master).Msg("db exported")
	return metadb.StepDone, nil
}

// exportRaced handles a dump that stored its file after the job had moved
// on: deleted by the tenant meanwhile, the file goes too; finished by
// another attempt (a keeper whose lease lapsed), the stored file is this
// dump's, so its figures are the ones to keep.
func (k *Keeper) exportRaced(ctx context.Context, id, object string, set func(*metadb.Job)) error {
	cur, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		if cur.State == metadb.JobDone && cur.Data[metadb.ExportDeletedAt] == "" && cur.Data != nil {
			set(cur)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cur.State != metadb.JobDone || cur.Data[metadb.ExportDeletedAt] != "" {
		if err := k.cfg.Store.Delete(ctx, object); err != nil {
			return err
		}
	}
	return errWaitStep
}

// recordExport records a dump's progress while the job is at dump; it
// returns errExportGone once the job is no longer there (deleted).
func (k *Keeper) recordExport(ctx context.Context, id string, keys, total, bytes int64) error {
	cur, err := k.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
		if cur.State != metadb.JobRunning || cur.Step != metadb.StepDump {
			return nil
		}
		if cur.Data == nil {
			cur.Data = map[string]string{}
		}
		total = max(total, keys)
		cur.Data[metadb.ResizeKeysCopied] = strconv.FormatInt(keys, 10)
		cur.Data[metadb.ResizeKeysTotal] = strconv.FormatInt(total, 10)
		cur.Data[metadb.ResizeBytesCopied] = strconv.FormatInt(bytes, 10)
		if total > 0 {
			cur.Progress = metadb.Progress(cur.Kind, cur.Step, float64(keys)/float64(total))
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn().Err(err).Str("job", id).Msg("record export progress failed")
		}
		return nil // the dump goes on; the next report tries again
	}
	if cur.State != metadb.JobRunning || cur.Step != metadb.StepDump {
		return errExportGone
	}
	return nil
}

// dumper reads one db into an RDB writer.
type dumper struct {
	read   *redis.Client
	owner  func() error // asked before each SCAN batch: a keeper that lost its lease stops
	report func() error // called after each pipeline, under mu

	seeds [2]maphash.Seed
	seen  map[[2]uint64]struct{} // fingerprints of the keys SCAN returned so far; used by run only

	mu sync.Mutex // guards w and report
	w  *rdbfile.Writer
}

// run walks the db with SCAN and writes every key it finds.
func (d *dumper) run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(exportWorkers)
	var cursor uint64
	for {
		keys, next, err := d.read.Scan(gctx, cursor, "", scanCount).Result()
		if err != nil {
			// A worker's failure cancels gctx, and so this SCAN: its
			// error (the export deleted, say) is the one that counts.
			if werr := g.Wait(); werr != nil {
				return werr
			}
			return fmt.Errorf("scan the db: %w", err)
		}
		if err := d.owner(); err != nil {
			_ = g.Wait()
			return err
		}
		keys = d.fresh(keys)
		g.Go(func() error { return d.dumpKeys(gctx, keys) })
		if cursor = next; cursor == 0 || gctx.Err() != nil {
			break
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// fresh drops the keys SCAN returned before.
func (d *dumper) fresh(keys []string) []string {
	out := keys[:0]
	for _, k := range keys {
		f := [2]uint64{maphash.String(d.seeds[0], k), maphash.String(d.seeds[1], k)}
		if _, ok := d.seen[f]; ok {
			continue
		}
		d.seen[f] = struct{}{}
		out = append(out, k)
	}
	return out
}

// dumpKeys reads keys in pipelines of at most copyBatchBytes (a bigger key
// alone) and writes them.
func (d *dumper) dumpKeys(ctx context.Context, keys []string) error {
	ks, err := inspectKeys(ctx, d.read, keys)
	if err != nil {
		return err
	}
	var batch []string
	var bytes int64
	for _, k := range ks {
		if k.typ == "none" {
			continue // gone since the SCAN
		}
		if len(batch) > 0 && bytes+k.mem > copyBatchBytes {
			if err := d.dumpBatch(ctx, batch); err != nil {
				return err
			}
			batch, bytes = batch[:0], 0
		}
		batch = append(batch, k.name)
		bytes += k.mem
	}
	return d.dumpBatch(ctx, batch)
}

// dumpBatch reads keys with one pipeline of DUMP + PEXPIRETIME and writes
// those still there and not expired.
func (d *dumper) dumpBatch(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	cmds, err := d.read.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Dump(ctx, k)
			p.Do(ctx, "PEXPIRETIME", k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read keys: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, k := range keys {
		payload, err := cmds[2*i].(*redis.StringCmd).Result()
		if errors.Is(err, redis.Nil) {
			continue // gone since the SCAN
		}
		if err != nil {
			return fmt.Errorf("DUMP: %w", err)
		}
		at, err := cmds[2*i+1].(*redis.Cmd).Int64()
		if err != nil {
			return fmt.Errorf("PEXPIRETIME: %w", err)
		}
		if at == -2 || (at > 0 && at <= now) {
			continue // gone or expired between the reads
		}
		if err := d.w.Add(k, []byte(payload), max(at, 0)); err != nil {
			return err
		}
	}
	return d.report()
}

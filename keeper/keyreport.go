package keeper

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/granary-db/granary/metadb"
)

// Key reports (metadb/keyreport.go). A request is a record in metadb and
// an entry in the pending set; the keeper reads the set every
// KeyReportPoll, or at once when a KeeperCommand of kind KeyReportCommand
// arrives, claims the reports of dbs on its own pairs and runs them on the
// pair's replica, at most KeyReportWorkers at once. A run records its
// progress every keyReportProgress; a keeper that dies mid-run leaves a
// record that goes stale, and the keeper that then watches the pair (or a
// new request) starts it again.

// keyReportProgress is how often a running report records its progress;
// well inside metadb.KeyReportStale.
const keyReportProgress = 2 * time.Second

// kickKeyReports asks the key report loop to look now.
func (k *Keeper) kickKeyReports() {
	select {
	case k.reportKick <- struct{}{}:
	default:
	}
}

// keyReportLoop claims and runs requested key reports until ctx ends; it
// waits for the runs it started before it returns.
func (k *Keeper) keyReportLoop(ctx context.Context) error {
	t := time.NewTicker(k.cfg.KeyReportPoll)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, k.cfg.KeyReportWorkers)
	var mu sync.Mutex
	running := map[metadb.DBRef]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.reportKick:
		}
		if !k.leased() {
			continue
		}
		refs, err := k.store.PendingKeyReports(ctx)
		if err != nil {
			if ctx.Err() == nil {
				k.log.Warn().Err(err).Msg("list key reports failed")
			}
			continue
		}
		for _, ref := range refs {
			mu.Lock()
			busy := running[ref]
			mu.Unlock()
			if busy {
				continue
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // all workers busy: the next poll
			}
			run, pair, slot, ok := k.claimKeyReport(ctx, ref)
			if !ok {
				<-sem
				continue
			}
			mu.Lock()
			running[ref] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				k.runKeyReport(ctx, run, pair, slot)
				mu.Lock()
				delete(running, ref)
				mu.Unlock()
				<-sem
			}()
		}
	}
}

// claimKeyReport claims a db's report if the db is on one of this keeper's
// pairs.
func (k *Keeper) claimKeyReport(ctx context.Context, ref metadb.DBRef) (*metadb.KeyReport, metadb.Pair, int, bool) {
	db, err := k.store.DB(ctx, ref.Tenant, ref.Index)
	if err != nil && !errors.Is(err, metadb.ErrNotFound) {
		return nil, metadb.Pair{}, 0, false
	}
	var pair metadb.Pair
	if db != nil {
		var ours bool
		if pair, ours = k.myPairs()[db.Pair]; !ours {
			return nil, metadb.Pair{}, 0, false
		}
	}
	// A db that is gone is claimed too: the claim takes it out of the set.
	run, ok, err := k.store.ClaimKeyReport(ctx, ref.Tenant, ref.Index, k.cfg.ID, metadb.KeyReportStale)
	if err != nil || !ok || db == nil {
		if err != nil && !errors.Is(err, metadb.ErrNotFound) && ctx.Err() == nil {
			k.log.Warn().Err(err).Str("tenant", ref.Tenant).Int("index", ref.Index).Msg("claim key report failed")
		}
		return nil, metadb.Pair{}, 0, false
	}
	return run, pair, db.SlotDB, true
}

// runKeyReport scans the db on the pair's replica and finishes the
// report, done or failed. Nothing of the db's keys is logged.
func (k *Keeper) runKeyReport(ctx context.Context, run *metadb.KeyReport, pair metadb.Pair, slot int) {
	lg := k.log.With().Str("tenant", run.Tenant).Int("index", run.Index).Str("pair", pair.ID).Logger()
	update := func(fn func(*metadb.KeyReport)) error {
		_, err := k.store.UpdateKeyReport(ctx, run.Tenant, run.Index, k.cfg.ID, run.Started, fn)
		return err
	}
	scan := keyScan{batch: k.cfg.KeyReportBatch, maxKeys: k.cfg.KeyReportMaxKeys, maxTime: k.cfg.KeyReportMaxTime, top: k.cfg.KeyReportTop}
	t0 := time.Now()
	res, err := func() (keyScanResult, error) {
		if pair.Replica == "" {
			return keyScanResult{}, errors.New("the pair has no replica to scan")
		}
		c := k.backends.sizer(pair.Replica)
		if err := replicaReady(ctx, c); err != nil {
			return keyScanResult{}, err
		}
		conn := c.Conn()
		defer conn.Close()
		return scan.run(ctx, conn, slot, keyReportProgress, func(scanned int64) error {
			return update(func(r *metadb.KeyReport) { r.Scanned = scanned })
		})
	}()
	if ctx.Err() != nil {
		return // the next keeper takes it over once it is stale
	}
	if errors.Is(err, metadb.ErrBadState) || errors.Is(err, metadb.ErrNotFound) {
		lg.Debug().Err(err).Msg("key report taken over")
		return
	}
	fin := time.Now().UTC()
	uerr := update(func(r *metadb.KeyReport) {
		if err != nil {
			r.State, r.Error = metadb.KeyReportFailed, err.Error()
			return
		}
		r.State, r.Scanned = metadb.KeyReportDone, res.scanned
		r.Last = &metadb.BigKeyReport{Pair: pair.ID, SlotDB: slot, Server: pair.Replica, Keeper: k.cfg.ID,
			Started: run.Started, Finished: fin, Keys: res.keys, Scanned: res.scanned, Complete: res.complete,
			Partial: res.partial, Elapsed: time.Since(t0), ByBytes: res.byBytes, ByElements: res.byElements}
	})
	switch {
	case err != nil:
		k.metrics.keyReports.WithLabelValues("failed").Inc()
		lg.Warn().Err(err).Msg("key report failed")
	case res.complete:
		k.metrics.keyReports.WithLabelValues("complete").Inc()
		lg.Info().Int64("scanned", res.scanned).Dur("took", time.Since(t0)).Msg("key report done")
	default:
		k.metrics.keyReports.WithLabelValues("partial").Inc()
		lg.Info().Int64("scanned", res.scanned).Str("partial", res.partial).Dur("took", time.Since(t0)).Msg("key report done")
	}
	if uerr != nil && ctx.Err() == nil {
		lg.Warn().Err(uerr).Msg("record key report failed")
	}
}

package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// claimScript atomically takes a free slot of one pair for a new tenant db:
// it picks the tenant's lowest unused index, records the db (state
// creating), marks the slot's owner and records the create job. Two claims
// can never get the same slot, because SPOP hands each member out once.
//
// KEYS: 1 tenant record, 2 tenant dbs hash, 3 pair free set, 4 pair owners,
// 5 job record, 6 jobs zset, 7 active jobs set, 8 pair record.
// ARGV: 1 db JSON, 2 job JSON, 3 job id, 4 now (unix ms), 5 tenant db limit.
// Refusals (nothing written): GRANARY_NOTENANT, GRANARY_TENANTLIMIT,
// GRANARY_NOFREE (see scriptCodes).
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('GRANARY_NOTENANT no such tenant') end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then return redis.error_reply('GRANARY_TENANTLIMIT tenant db limit reached') end
local pair = redis.call('GET', KEYS[8])
if not pair or cjson.decode(pair).state ~= 'active' then return redis.error_reply('GRANARY_NOFREE the pair takes no new db') end
local slot = redis.call('SPOP', KEYS[3])
if not slot then return redis.error_reply('GRANARY_NOFREE the pair has no free slot') end
local idx = 0
while redis.call('HEXISTS', KEYS[2], tostring(idx)) == 1 do idx = idx + 1 end
local db = cjson.decode(ARGV[1])
db.index = idx
db.slot_db = tonumber(slot)
local job = cjson.decode(ARGV[2])
job.index = idx
job.slot_db = tonumber(slot)
redis.call('HSET', KEYS[4], slot, db.tenant .. '/' .. idx)
redis.call('HSET', KEYS[2], tostring(idx), cjson.encode(db))
redis.call('SET', KEYS[5], cjson.encode(job))
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[3])
redis.call('SADD', KEYS[7], ARGV[3])
return {idx, tonumber(slot)}
`)

// ClaimDB takes a free slot of the given pair for a new db of the tenant and
// records a create job for the master to finish. It returns an error
// wrapping pools.ErrNoCapacity when the pair has no free slot or is no
// longer active (a drain began since the pick; the caller re-picks a pair), ErrNotFound for an unknown tenant and ErrTenantLimit
// when the tenant has limit dbs.
func (s *Store) ClaimDB(ctx context.Context, tenant string, pair *Pair, writeMode string, quota int64, limit int, jobID string) (*DB, *Job, error) {
	ts := now()
	db := &DB{Tenant: tenant, Size: pair.Size, QuotaBytes: quota, State: DBCreating, WriteMode: writeMode, Pair: pair.ID, Job: jobID, Created: ts}
	job := &Job{ID: jobID, Kind: JobCreate, State: JobRunning, Step: StepFlush, Tenant: tenant, Pair: pair.ID, Created: ts, Updated: ts,
		Log: []JobStep{{Step: StepClaim, At: ts}}}
	dbJSON, _ := json.Marshal(db)
	jobJSON, _ := json.Marshal(job)
	keys := []string{keyTenant(tenant), keyTenantDBs(tenant), keyPairFree(pair.ID), keyPairOwners(pair.ID), keyJob(jobID), keyJobs, keyJobsActive, keyPair(pair.ID)}
	res, err := s.runConfirmed(ctx, claimScript, keys, dbJSON, jobJSON, jobID, time.Now().UnixMilli(), limit)
	switch {
	case errors.Is(err, pools.ErrNoCapacity):
		return nil, nil, fmt.Errorf("pair %s: %w", pair.ID, pools.ErrNoCapacity)
	case errors.Is(err, ErrNotFound):
		return nil, nil, fmt.Errorf("tenant %s: %w", tenant, ErrNotFound)
	case errors.Is(err, ErrTenantLimit):
		return nil, nil, fmt.Errorf("%w (%d)", ErrTenantLimit, limit)
	case err != nil:
		return nil, nil, fmt.Errorf("claim db: %w", err)
	}
	arr, _ := res.([]any)
	if len(arr) != 2 {
		return nil, nil, fmt.Errorf("claim db: unexpected reply %v", res)
	}
	db.Index = int(arr[0].(int64))
	db.SlotDB = int(arr[1].(int64))
	job.Index, job.SlotDB = db.Index, db.SlotDB
	return db, job, nil
}

// DB loads one tenant db; ErrNotFound if the tenant has no such index.
func (s *Store) DB(ctx context.Context, tenant string, index int) (*DB, error) {
	return getDB(ctx, s.rdb, tenant, index)
}

func getDB(ctx context.Context, c redis.Cmdable, tenant string, index int) (*DB, error) {
	b, err := c.HGet(ctx, keyTenantDBs(tenant), field(index)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("db %s/%d: %w", tenant, index, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	var db DB
	if err := json.Unmarshal(b, &db); err != nil {
		return nil, fmt.Errorf("decode db %s/%d: %w", tenant, index, err)
	}
	return &db, nil
}

// DBs loads all dbs of a tenant, sorted by index.
func (s *Store) DBs(ctx context.Context, tenant string) ([]*DB, error) {
	m, err := s.rdb.HGetAll(ctx, keyTenantDBs(tenant)).Result()
	if err != nil {
		return nil, err
	}
	return decodeDBs(tenant, m)
}

func decodeDBs(tenant string, m map[string]string) ([]*DB, error) {
	out := make([]*DB, 0, len(m))
	for k, v := range m {
		var db DB
		if err := json.Unmarshal([]byte(v), &db); err != nil {
			return nil, fmt.Errorf("decode db %s/%s: %w", tenant, k, err)
		}
		out = append(out, &db)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

// AllDBs loads every tenant db, in one pipelined round trip for all
// tenants (a proxy reloads this on every reconnect or version gap).
func (s *Store) AllDBs(ctx context.Context) ([]*DB, error) {
	names, err := s.rdb.SMembers(ctx, keyTenants).Result()
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	cmds := make([]*redis.MapStringStringCmd, len(names))
	_, err = s.rdb.Pipelined(ctx, func(pl redis.Pipeliner) error {
		for i, n := range names {
			cmds[i] = pl.HGetAll(ctx, keyTenantDBs(n))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []*DB
	for i, n := range names {
		dbs, err := decodeDBs(n, cmds[i].Val())
		if err != nil {
			return nil, err
		}
		out = append(out, dbs...)
	}
	return out, nil
}

// UpdateDB changes one tenant db through fn under an optimistic transaction,
// retried on conflict. fn may return bus messages: then the topology version
// is bumped and they are published in the same transaction. With a fence,
// only the leading master may make the change.
func (s *Store) UpdateDB(ctx context.Context, f *Fence, sender, tenant string, index int, fn func(*DB) ([]*buspb.Envelope, error)) (*DB, error) {
	return s.UpdateDBAudited(ctx, f, sender, tenant, index, func(db *DB) ([]*buspb.Envelope, *AuditEntry, error) {
		msgs, err := fn(db)
		return msgs, nil, err
	})
}

// UpdateDBAudited is UpdateDB whose fn may also return an audit entry: it
// is appended to the audit stream in the same transaction as the change, so
// a decision and its record never diverge.
func (s *Store) UpdateDBAudited(ctx context.Context, f *Fence, sender, tenant string, index int, fn func(*DB) ([]*buspb.Envelope, *AuditEntry, error)) (*DB, error) {
	var out *DB
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, tenant, index)
		if err != nil {
			return err
		}
		msgs, audit, err := fn(db)
		if err != nil {
			return err
		}
		b, err := json.Marshal(db)
		if err != nil {
			return err
		}
		queue, err := announce(ctx, tx, sender, msgs)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(tenant), field(index), b)
			queue(pl)
			if audit != nil {
				s.queueAudit(ctx, pl, audit)
			}
			return nil
		})
		out = db
		return err
	}, keyTenantDBs(tenant), keyVersion)
	return out, err
}

// StartDrop marks an active db as dropping and records its drop job, in one
// transaction. Dropping a db that is already dropping returns its job.
// It returns ErrBadState while the db is being created, resized, filled by
// an import or exported.
func (s *Store) StartDrop(ctx context.Context, tenant string, index int, jobID string) (*Job, error) {
	var job *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, tenant, index)
		if err != nil {
			return err
		}
		if db.State == DBDropping {
			job, err = getJSON[Job](ctx, tx, keyJob(db.Job))
			return err
		}
		if db.State != DBActive {
			return fmt.Errorf("db %d is %s: %w", index, db.State, ErrBadState)
		}
		if db.ReadOnly != "" { // an import or a restore is filling it: cancel it first
			return fmt.Errorf("db %d is read-only while %s: %w", index, db.ReadOnly, ErrBadState)
		}
		if err := slotInUse(ctx, tx, db); err != nil {
			return err
		}
		ts := now()
		job = &Job{ID: jobID, Kind: JobDrop, State: JobRunning, Step: StepUnroute, Tenant: tenant, Index: index,
			Pair: db.Pair, SlotDB: db.SlotDB, Created: ts, Updated: ts, Log: []JobStep{{Step: StepRequested, At: ts}}}
		db.State, db.Job = DBDropping, jobID
		dbJSON, _ := json.Marshal(db)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(tenant), field(index), dbJSON)
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyTenantDBs(tenant))
	return job, err
}

// ReleaseSlot ends a drop job: it deletes the db record, returns the slot to
// its pair's free list and marks the job done, all in one transaction, so a
// slot is freed exactly once even if two masters race (the fence refuses
// the deposed one).
func (s *Store) ReleaseSlot(ctx context.Context, f *Fence, jobID string) error {
	// The job's tenant and pair never change, so reading them before the
	// transaction to know which keys to watch is safe.
	j0, err := s.Job(ctx, jobID)
	if err != nil {
		return err
	}
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		job, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil {
			return err
		}
		if job.State != JobRunning {
			return nil
		}
		owner := job.Tenant + "/" + strconv.Itoa(job.Index)
		cur, err := tx.HGet(ctx, keyPairOwners(job.Pair), field(job.SlotDB)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		db, err := getDB(ctx, tx, job.Tenant, job.Index)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		ts := now()
		job.finish(StepFree, f.holder(), ts)
		jobJSON, _ := json.Marshal(job)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			if db != nil && db.Job == jobID {
				pl.HDel(ctx, keyTenantDBs(job.Tenant), field(job.Index))
				// The measurement belongs to the dropped db, not to a
				// later db that may reuse the index.
				pl.HDel(ctx, keyTenantSizes(job.Tenant), field(job.Index))
				// So are its usage history and alert rule (usage.go).
				pl.Del(ctx, keyUsage(job.Tenant, job.Index))
				pl.HDel(ctx, keyTenantAlerts(job.Tenant), field(job.Index))
				pl.Del(ctx, keyAlertHistory(job.Tenant, job.Index))
				for _, m := range AlertMetrics {
					pl.HDel(ctx, keyAlertsPending(job.Tenant), pendingField(job.Index, m))
				}
				// And its key names (keyreport.go).
				pl.Del(ctx, keyKeyReport(job.Tenant, job.Index), keyHotKeys(job.Tenant, job.Index))
				pl.SRem(ctx, keyKeyReportsPending, keyReportMember(job.Tenant, job.Index))
			}
			if cur == owner {
				pl.HDel(ctx, keyPairOwners(job.Pair), field(job.SlotDB))
				pl.SAdd(ctx, keyPairFree(job.Pair), job.SlotDB)
			}
			pl.Set(ctx, keyJob(jobID), jobJSON, 0)
			pl.SRem(ctx, keyJobsActive, jobID)
			return nil
		})
		return err
	}, keyJob(jobID), keyPairOwners(j0.Pair), keyTenantDBs(j0.Tenant))
}

// RouteOf is the route a proxy needs for db on pair.
func RouteOf(db *DB, pair *Pair) *buspb.Route {
	mode := buspb.WriteMode_WRITE_MODE_CONFIRMED
	if db.WriteMode == WriteAsync {
		mode = buspb.WriteMode_WRITE_MODE_ASYNC
	}
	r := &buspb.Route{Tenant: db.Tenant, Index: uint32(db.Index), Pair: pair.ID, Master: pair.Master,
		Replica: pair.Replica, Db: uint32(db.SlotDB), QuotaBytes: db.QuotaBytes, WriteMode: mode,
		Banned: db.Banned, Size: db.Size, HoldJob: db.HoldJob, HoldDeadlineUnixNanos: db.HoldUntil, ReadOnly: db.ReadOnly}
	if db.HoldJob != "" && db.HoldTarget != "" {
		r.HoldTargetMaster, r.HoldTargetDb = db.HoldTarget, uint32(db.HoldTargetDB)
	}
	r.WriteDegraded = mode == buspb.WriteMode_WRITE_MODE_CONFIRMED && pair.WritesDegraded
	return r
}

// Routes is the snapshot a proxy loads: the topology version, then the route
// of every db that serves clients (active or resizing). The version is read
// first, so the routes are at least as new as it.
func (s *Store) Routes(ctx context.Context) (uint64, []*buspb.Route, error) {
	v, err := s.Version(ctx)
	if err != nil {
		return 0, nil, err
	}
	dbs, err := s.AllDBs(ctx)
	if err != nil {
		return 0, nil, err
	}
	pairs, err := s.Pairs(ctx, "")
	if err != nil {
		return 0, nil, err
	}
	byID := map[string]*Pair{}
	for i := range pairs {
		byID[pairs[i].ID] = &pairs[i].Pair
	}
	var out []*buspb.Route
	for _, db := range dbs {
		p := byID[db.Pair]
		if p == nil || (db.State != DBActive && db.State != DBResizing) {
			continue
		}
		out = append(out, RouteOf(db, p))
	}
	return v, out, nil
}

// SetReadOnly sets (reason non-empty) or clears (reason "") db's read-only
// state and, when proxies serve the db, publishes its route in the same
// transaction, so every proxy refuses the db's writes once the call
// returns and the proxies have applied the version (wait for their acks
// before relying on it). f fences a job's owner; nil for none.
func (s *Store) SetReadOnly(ctx context.Context, f *Fence, sender, tenant string, index int, reason string) (*DB, error) {
	return s.UpdateDB(ctx, f, sender, tenant, index, func(db *DB) ([]*buspb.Envelope, error) {
		if db.ReadOnly == reason {
			return nil, nil
		}
		db.ReadOnly = reason
		if db.State != DBActive && db.State != DBResizing {
			return nil, nil // not routed: the route published later carries it
		}
		pair, err := s.Pair(ctx, db.Pair)
		if err != nil {
			return nil, err
		}
		return []*buspb.Envelope{{Payload: &buspb.Envelope_RouteChanged{
			RouteChanged: &buspb.RouteChanged{Route: RouteOf(db, pair)}}}}, nil
	})
}

package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key reports. A db's big-key report is asked for over REST and computed by
// the keeper that watches the db's pair, on the pair's replica: the request
// is a KeyReport record in state pending plus the db's entry in the pending
// set, which keepers read on a short poll (and on a KeeperCommand
// notification, which only makes them look sooner). The keeper claims the
// record (running), records its progress in it, and finishes it (done or
// failed) with the lists in Last. A run whose keeper stopped reporting
// progress for the stale time may be claimed again, by the same or another
// keeper, or restarted by a new request.
//
// Hot keys are the proxies' sampling of their tenants' commands: each proxy
// writes its per-db top keys every few seconds into one hash per db, a field
// per proxy; the reader merges the fields no older than an age bound, and
// the hash expires when no proxy refreshes it.

// KeyReportStale is how long a pending or running key report may go
// without progress before it counts as abandoned: a new request restarts
// it and a keeper may claim it again. Runners record progress well within
// it.
const KeyReportStale = 30 * time.Second

// KeyReportCommand is the kind of the KeeperCommand that tells the keeper
// of a pair that a key report of one of its dbs was requested, so it looks
// now rather than at its next poll.
const KeyReportCommand = "keyreport"

// Key report states.
const (
	KeyReportPending = "pending"
	KeyReportRunning = "running"
	KeyReportDone    = "done"
	KeyReportFailed  = "failed"
)

// BigKey is one key of a big-key report. Elements is the key's length by
// its type's own measure: LLEN, HLEN, SCARD, ZCARD, XLEN, and for a string
// STRLEN (bytes); -1 for a type without one.
type BigKey struct {
	Key      string `json:"key"`
	Type     string `json:"type"`
	Bytes    int64  `json:"bytes"`
	Elements int64  `json:"elements"`
}

// BigKeyReport is one finished scan of a db: its biggest keys by MEMORY
// USAGE and by element count, as found on the server named. Complete says
// the scan visited the whole db; otherwise Partial says why it stopped.
type BigKeyReport struct {
	Pair       string        `json:"pair"`
	SlotDB     int           `json:"slot_db"`
	Server     string        `json:"server"`
	Keeper     string        `json:"keeper"`
	Started    time.Time     `json:"started"`
	Finished   time.Time     `json:"finished"`
	Keys       int64         `json:"keys"`
	Scanned    int64         `json:"scanned"`
	Complete   bool          `json:"complete"`
	Partial    string        `json:"partial,omitempty"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	ByBytes    []BigKey      `json:"by_bytes"`
	ByElements []BigKey      `json:"by_elements"`
}

// KeyReport is a db's big-key report: the state of the latest request and
// the latest finished report (Last), which a newer run leaves in place
// until it finishes.
type KeyReport struct {
	Tenant    string    `json:"tenant"`
	Index     int       `json:"index"`
	State     string    `json:"state"`
	Requested time.Time `json:"requested"`
	// Started and Keeper name the running (or last) run; Updated is its
	// last progress report, Scanned the keys it has read so far.
	Started time.Time     `json:"started,omitzero"`
	Updated time.Time     `json:"updated,omitzero"`
	Keeper  string        `json:"keeper,omitempty"`
	Scanned int64         `json:"scanned"`
	Error   string        `json:"error,omitempty"`
	Last    *BigKeyReport `json:"last,omitempty"`
}

// active says whether the record's run is pending or running and has shown
// life within stale.
func (r *KeyReport) active(at time.Time, stale time.Duration) bool {
	if r.State != KeyReportPending && r.State != KeyReportRunning {
		return false
	}
	seen := r.Requested
	if r.Updated.After(seen) {
		seen = r.Updated
	}
	return at.Sub(seen) < stale
}

func keyReportMember(tenant string, index int) string { return tenant + "/" + field(index) }

// RequestKeyReport asks for a new big-key report of a db (which must exist;
// ErrNotFound otherwise) and reports whether it asked: a report already
// pending or running (and not stale), or one finished less than minGap ago,
// is returned as it is instead, so a db has one report at a time and at
// most one per minGap.
func (s *Store) RequestKeyReport(ctx context.Context, tenant string, index int, minGap, stale time.Duration) (*KeyReport, bool, error) {
	var out *KeyReport
	started := false
	k := keyKeyReport(tenant, index)
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		started = false
		if _, err := getDB(ctx, tx, tenant, index); err != nil {
			return err
		}
		cur, err := getJSON[KeyReport](ctx, tx, k)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		at := time.Now().UTC()
		if cur != nil {
			last := cur.Updated
			if cur.Last != nil && cur.Last.Finished.After(last) {
				last = cur.Last.Finished
			}
			if cur.active(at, stale) || (cur.State != KeyReportPending && cur.State != KeyReportRunning && at.Sub(last) < minGap) {
				out = cur
				return nil
			}
		}
		next := &KeyReport{Tenant: tenant, Index: index, State: KeyReportPending, Requested: at}
		if cur != nil {
			next.Last = cur.Last
		}
		b, _ := json.Marshal(next)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, k, b, 0)
			p.SAdd(ctx, keyKeyReportsPending, keyReportMember(tenant, index))
			return nil
		})
		out, started = next, err == nil
		return err
	}, k, keyTenantDBs(tenant))
	if err != nil {
		return nil, false, fmt.Errorf("request key report %s/%d: %w", tenant, index, err)
	}
	return out, started, nil
}

// KeyReport loads a db's big-key report; ErrNotFound if none was asked for.
func (s *Store) KeyReport(ctx context.Context, tenant string, index int) (*KeyReport, error) {
	r, err := getJSON[KeyReport](ctx, s.rdb, keyKeyReport(tenant, index))
	if err != nil {
		return nil, fmt.Errorf("key report %s/%d: %w", tenant, index, err)
	}
	return r, nil
}

// DBRef names a tenant db.
type DBRef struct {
	Tenant string
	Index  int
}

// PendingKeyReports lists the dbs with a report pending or running.
func (s *Store) PendingKeyReports(ctx context.Context) ([]DBRef, error) {
	ms, err := s.rdb.SMembers(ctx, keyKeyReportsPending).Result()
	if err != nil {
		return nil, fmt.Errorf("pending key reports: %w", err)
	}
	out := make([]DBRef, 0, len(ms))
	for _, m := range ms {
		i := strings.LastIndexByte(m, '/')
		if i < 0 {
			continue
		}
		n, err := strconv.Atoi(m[i+1:])
		if err != nil {
			continue
		}
		out = append(out, DBRef{Tenant: m[:i], Index: n})
	}
	return out, nil
}

// ClaimKeyReport makes keeper the runner of a db's pending report, or of a
// running one whose runner showed no progress for stale, and returns the
// record as claimed. It reports false, changing nothing, when the report is
// not claimable (done, failed, or running elsewhere). A db that no longer
// exists leaves the pending set (ErrNotFound), and so does a report that
// is no longer pending or running.
func (s *Store) ClaimKeyReport(ctx context.Context, tenant string, index int, keeper string, stale time.Duration) (*KeyReport, bool, error) {
	k := keyKeyReport(tenant, index)
	var out *KeyReport
	claimed := false
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		claimed = false
		_, dberr := getDB(ctx, tx, tenant, index)
		cur, err := getJSON[KeyReport](ctx, tx, k)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if errors.Is(dberr, ErrNotFound) || cur == nil || (cur.State != KeyReportPending && cur.State != KeyReportRunning) {
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.SRem(ctx, keyKeyReportsPending, keyReportMember(tenant, index))
				return nil
			})
			if err == nil && dberr != nil {
				err = dberr
			}
			return err
		}
		if dberr != nil {
			return dberr
		}
		at := time.Now().UTC()
		if cur.State == KeyReportRunning && cur.active(at, stale) {
			out = cur
			return nil
		}
		cur.State, cur.Keeper, cur.Started, cur.Updated, cur.Scanned, cur.Error = KeyReportRunning, keeper, at, at, 0, ""
		b, _ := json.Marshal(cur)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, k, b, 0)
			return nil
		})
		out, claimed = cur, err == nil
		return err
	}, k, keyTenantDBs(tenant))
	if err != nil {
		return nil, false, fmt.Errorf("claim key report %s/%d: %w", tenant, index, err)
	}
	return out, claimed, nil
}

// UpdateKeyReport changes a running report through fn, provided it is
// still the run of keeper that started at started; ErrBadState otherwise
// (the run was taken over, or restarted by a new request), ErrNotFound if
// the record is gone. fn may finish the run (state done or failed), which
// takes the db out of the pending set.
func (s *Store) UpdateKeyReport(ctx context.Context, tenant string, index int, keeper string, started time.Time, fn func(*KeyReport)) (*KeyReport, error) {
	k := keyKeyReport(tenant, index)
	var out *KeyReport
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		cur, err := getJSON[KeyReport](ctx, tx, k)
		if err != nil {
			return err
		}
		if cur.State != KeyReportRunning || cur.Keeper != keeper || !cur.Started.Equal(started) {
			return fmt.Errorf("run of %s started %s is over: %w", keeper, started.Format(time.RFC3339Nano), ErrBadState)
		}
		fn(cur)
		cur.Updated = time.Now().UTC()
		b, _ := json.Marshal(cur)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, k, b, 0)
			if cur.State != KeyReportRunning {
				p.SRem(ctx, keyKeyReportsPending, keyReportMember(tenant, index))
			}
			return nil
		})
		out = cur
		return err
	}, k)
	if err != nil {
		return nil, fmt.Errorf("update key report %s/%d: %w", tenant, index, err)
	}
	return out, nil
}

// HotKey is one key of a proxy's sampled top keys: Rate is its estimated
// commands per second, an overestimate by at most RateError.
type HotKey struct {
	Key       string  `json:"key"`
	Rate      float64 `json:"rate"`
	RateError float64 `json:"rate_error"`
}

// HotKeys is one proxy's report of one db's hottest keys at Time: the keys
// of its first key argument, sampled one command in SampleEvery, counted
// with exponential decay over about Window.
type HotKeys struct {
	Tenant      string        `json:"-"`
	Index       int           `json:"-"`
	Proxy       string        `json:"proxy"`
	Time        time.Time     `json:"time"`
	SampleEvery int           `json:"sample_every"`
	Window      time.Duration `json:"window_ns"`
	// Sampled is the decayed count of sampled commands of the db.
	Sampled float64  `json:"sampled"`
	Keys    []HotKey `json:"keys"`
}

// PublishHotKeys stores one proxy's reports (a db each) in one round trip;
// each db's hash expires ttl after its last report from any proxy.
func (s *Store) PublishHotKeys(ctx context.Context, proxy string, hs []HotKeys, ttl time.Duration) error {
	if len(hs) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, h := range hs {
			h.Proxy = proxy
			b, err := json.Marshal(h)
			if err != nil {
				return err
			}
			k := keyHotKeys(h.Tenant, h.Index)
			p.HSet(ctx, k, proxy, b)
			p.PExpire(ctx, k, ttl)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publish hot keys: %w", err)
	}
	return nil
}

// HotKeysOf reads every proxy's latest report on a db made no earlier than
// maxAge ago, ordered by proxy id.
func (s *Store) HotKeysOf(ctx context.Context, tenant string, index int, maxAge time.Duration) ([]HotKeys, error) {
	m, err := s.rdb.HGetAll(ctx, keyHotKeys(tenant, index)).Result()
	if err != nil {
		return nil, fmt.Errorf("hot keys %s/%d: %w", tenant, index, err)
	}
	cut := time.Now().Add(-maxAge)
	out := make([]HotKeys, 0, len(m))
	for _, v := range m {
		var h HotKeys
		if err := json.Unmarshal([]byte(v), &h); err != nil {
			return nil, fmt.Errorf("decode hot keys %s/%d: %w", tenant, index, err)
		}
		if h.Time.Before(cut) {
			continue
		}
		h.Tenant, h.Index = tenant, index
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b HotKeys) int { return strings.Compare(a.Proxy, b.Proxy) })
	return out, nil
}

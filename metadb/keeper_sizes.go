package metadb

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DBSize is a keeper's measurement of one tenant db: the memory its keys
// use in the slot that served it, as the sum of MEMORY USAGE over its keys,
// either exact (every key) or estimated from a sample with an error bound.
type DBSize struct {
	Tenant string `json:"tenant"`
	Index  int    `json:"index"`
	// Pair and SlotDB name the slot measured; Server is the address the
	// measurement ran on (the pair's replica).
	Pair   string    `json:"pair"`
	SlotDB int       `json:"slot_db"`
	Server string    `json:"server"`
	Keeper string    `json:"keeper"`
	At     time.Time `json:"at"`
	// UsedBytes is the estimate; ErrorBytes the half-width of its ~95%
	// confidence interval (0 when Exact).
	UsedBytes  int64 `json:"used_bytes"`
	ErrorBytes int64 `json:"error_bytes"`
	Exact      bool  `json:"exact"`
	// Keys is the db's key count (DBSIZE); Measured is how many keys'
	// MEMORY USAGE were read.
	Keys     int64 `json:"keys"`
	Measured int64 `json:"measured"`
	// Elapsed is how long the measurement took.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Reason is what asked for it: "written", "sweep", "command", "recalibrate".
	Reason string `json:"reason,omitempty"`
	// ExactAt is when this slot was last measured exactly (this time, or
	// carried over from an earlier measurement); zero if never.
	ExactAt time.Time `json:"exact_at,omitempty"`
}

// RecordDBSize stores a measurement and sets the db's UsedBytes to it, in
// one transaction. It changes no topology (no version bump, no message).
// A measurement of a slot that no longer serves the db (the db moved, was
// dropped, or the index was reused) is refused with ErrBadState, so a late
// measurement cannot overwrite a newer truth; ErrNotFound if the db is gone.
func (s *Store) RecordDBSize(ctx context.Context, m *DBSize) (*DB, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out *DB
	err = s.txn(ctx, nil, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, m.Tenant, m.Index)
		if err != nil {
			return err
		}
		if db.Pair != m.Pair || db.SlotDB != m.SlotDB {
			return fmt.Errorf("db %s/%d is served by %s db %d, not %s db %d: %w",
				m.Tenant, m.Index, db.Pair, db.SlotDB, m.Pair, m.SlotDB, ErrBadState)
		}
		db.UsedBytes = m.UsedBytes
		dbJSON, err := json.Marshal(db)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(m.Tenant), field(m.Index), dbJSON)
			pl.HSet(ctx, keyTenantSizes(m.Tenant), field(m.Index), b)
			return nil
		})
		out = db
		return err
	}, keyTenantDBs(m.Tenant))
	return out, err
}

// DBSize loads the last measurement of a tenant db; ErrNotFound if there is
// none. The record may describe a slot the db has since left: compare Pair
// and SlotDB with the db's.
func (s *Store) DBSize(ctx context.Context, tenant string, index int) (*DBSize, error) {
	return hgetJSON[DBSize](ctx, s.rdb, keyTenantSizes(tenant), field(index), fmt.Sprintf("size of db %s/%d", tenant, index))
}

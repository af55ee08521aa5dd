package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// NodeHealth is what a keeper last saw of one Redis server of a pair.
type NodeHealth struct {
	Addr string `json:"addr"`
	// Up is whether the last probe (PING and INFO) succeeded; Since is when
	// Up last changed, so "down since" and "up since" read the same way.
	Up    bool      `json:"up"`
	Since time.Time `json:"since"`
	// LastOK is the time of the last successful probe; zero if never.
	LastOK time.Time `json:"last_ok,omitempty"`
	Error  string    `json:"error,omitempty"`
	// Role is "master" or "slave", as INFO replication says.
	Role string `json:"role,omitempty"`
	// RunID is the server's run_id (INFO server): it changes on every
	// restart. PrevRunID and RestartedAt record the last change seen, so a
	// master that came back (possibly empty) is recognisable afterwards.
	RunID       string    `json:"run_id,omitempty"`
	PrevRunID   string    `json:"prev_run_id,omitempty"`
	RestartedAt time.Time `json:"restarted_at,omitempty"`
	UptimeSec   int64     `json:"uptime_sec,omitempty"`
	// ReplID is master_replid; Offset is master_repl_offset on a master and
	// slave_repl_offset (the applied offset) on a replica.
	ReplID string `json:"repl_id,omitempty"`
	Offset int64  `json:"offset"`
	// Replica side: whom it follows and how its link is.
	MasterAddr        string `json:"master_addr,omitempty"`
	LinkUp            bool   `json:"link_up,omitempty"`
	LinkDownSec       int64  `json:"link_down_sec,omitempty"`
	LastIOSec         int64  `json:"last_io_sec,omitempty"`
	SyncInProgress    bool   `json:"sync_in_progress,omitempty"`
	ConnectedReplicas int    `json:"connected_replicas,omitempty"`
}

// PairHealth is the watching keeper's report on one pair. The keeper
// rewrites it on every change of up/down, role, link or run id, and at
// least every report interval otherwise; At tells how fresh it is.
type PairHealth struct {
	Pair    string     `json:"pair"`
	Keeper  string     `json:"keeper"`
	At      time.Time  `json:"at"`
	Master  NodeHealth `json:"master"`
	Replica NodeHealth `json:"replica"`
	// ReplicaState and LagSec come from the master's view of the pair's
	// replica (slaveN: state=online, lag=seconds since its last ack);
	// empty / -1 when the master does not list it.
	ReplicaState string `json:"replica_state,omitempty"`
	LagSec       int64  `json:"lag_sec"`
	// LagBytes is the master's offset minus the replica's applied offset,
	// when both answered; -1 otherwise.
	LagBytes int64 `json:"lag_bytes"`
}

// SetPairHealth stores a keeper's report on a pair, replacing the previous
// one. It is a plain write: a report is an observation with its own time,
// not a decision, so a report from a keeper that has just lost the pair is
// harmless and is overwritten by the next keeper's.
func (s *Store) SetPairHealth(ctx context.Context, h *PairHealth) error {
	if h.Pair == "" {
		return fmt.Errorf("pair health: empty pair id")
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	return s.rdb.Set(ctx, keyPairHealth(h.Pair), b, 0).Err()
}

// PairHealth loads the last report on a pair; ErrNotFound if no keeper has
// reported on it yet.
func (s *Store) PairHealth(ctx context.Context, id string) (*PairHealth, error) {
	h, err := getJSON[PairHealth](ctx, s.rdb, keyPairHealth(id))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("health of pair %s: %w", id, ErrNotFound)
	}
	return h, err
}

package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReplAuth is the credential a pair's replicas sync from its master with:
// an ACL user the pair's keeper creates on the master at run time and
// never saves to a config or ACL file. A master that restarts has
// forgotten it, so a replica told to authenticate with it is refused by
// the restarted master before any sync, however fast the restart was; the
// keeper sees the master's run id differ from RunID and fails the pair
// over (keeper/replguard.go). The password never leaves metadb and the
// keeper: no API view shows this record.
type ReplAuth struct {
	Master   string    `json:"master"` // the master the user was created on
	RunID    string    `json:"run_id"` // that master's run id when it was
	User     string    `json:"user"`
	Password string    `json:"password"`
	At       time.Time `json:"at"`
}

// ReplAuth returns pair's replication credential; ErrNotFound when none
// was made.
func (s *Store) ReplAuth(ctx context.Context, pair string) (*ReplAuth, error) {
	ra, err := getJSON[ReplAuth](ctx, s.rdb, keyPairReplAuth(pair))
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("replication credential of pair %s: %w", pair, ErrNotFound)
	}
	return ra, err
}

// SetReplAuth records ra as pair's replication credential, only while
// ra.Master is still the pair's master (ErrBadState otherwise: a failover
// came between the keeper's ACL SETUSER and this record).
func (s *Store) SetReplAuth(ctx context.Context, pair string, ra *ReplAuth) error {
	b, err := json.Marshal(ra)
	if err != nil {
		return err
	}
	return s.txn(ctx, nil, func(tx *redis.Tx) error {
		p, err := getJSON[Pair](ctx, tx, keyPair(pair))
		if err != nil {
			return err
		}
		if p.Master != ra.Master {
			return fmt.Errorf("replication credential for %s: pair %s's master is %s: %w", ra.Master, pair, p.Master, ErrBadState)
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPairReplAuth(pair), b, 0)
			return nil
		})
		return err
	}, keyPair(pair))
}

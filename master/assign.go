package master

import (
	"context"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// assignPairs gives every pair a live keeper: new pairs, and pairs whose
// keeper's lease lapsed, go to the live keeper watching the fewest pairs.
func (m *Master) assignPairs(ctx context.Context, f *metadb.Fence) error {
	keepers, err := m.store.LiveMembers(ctx, metadb.KindKeeper)
	if err != nil || len(keepers) == 0 {
		return err
	}
	pairs, err := m.store.Pairs(ctx, "")
	if err != nil {
		return err
	}
	current := make(map[string]string, len(pairs))
	for _, p := range pairs {
		current[p.ID] = p.Keeper
	}
	live := make([]pools.KeeperLoad, len(keepers))
	for i, k := range keepers {
		live[i] = pools.KeeperLoad{ID: k.ID}
	}
	for pair, keeper := range pools.AssignPairs(current, live) {
		_, err := m.store.UpdatePair(ctx, f, pair, func(p *metadb.Pair) error {
			p.Keeper = keeper
			return nil
		})
		if err != nil {
			return err
		}
		m.log.Info().Str("pair", pair).Str("keeper", keeper).Msg("pair assigned")
	}
	return nil
}

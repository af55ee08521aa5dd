package metadb

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-db/granary/pools"
)

// placeAttempts bounds how often Place re-picks a pair after a racing claim
// emptied the one it chose.
const placeAttempts = 5

// Place finds room for one slot of size's pool and takes it with claim, the
// one placement path of new dbs and resize targets alike: it views the
// pool's pairs, lets pools.PickPair choose among them (never the pair
// exclude; "" excludes none) and calls claim with the chosen pair. claim
// takes a slot of that pair atomically (ClaimDB, ReserveResizeSlot); when it
// answers pools.ErrNoCapacity, a racing claim took the pair's last slot, and
// Place views the pool again and re-picks, placeAttempts times at most.
//
// It returns nil once claim succeeded and claim's other errors unchanged.
// When the pool has no room it returns PickPair's error, which wraps
// pools.ErrNoCapacity (and pools.ErrEmptyPool when the pool has no pair
// besides exclude); when every attempt lost its race, an error wrapping
// ErrConflict and not pools.ErrNoCapacity.
func (s *Store) Place(ctx context.Context, size pools.Size, exclude string, claim func(ctx context.Context, p *Pair) error) error {
	for attempt := 0; attempt < placeAttempts; attempt++ {
		views, err := s.Pairs(ctx, size.String())
		if err != nil {
			return err
		}
		loads := make([]pools.PairLoad, 0, len(views))
		byID := make(map[string]*Pair, len(views))
		for i := range views {
			v := &views[i]
			if v.ID == exclude {
				continue
			}
			loads = append(loads, pools.PairLoad{ID: v.ID, Free: v.Free, Total: len(v.DBs), Live: v.State == PairActive})
			byID[v.ID] = &v.Pair
		}
		id, err := pools.PickPair(size, loads)
		if err != nil {
			return err
		}
		if err := claim(ctx, byID[id]); !errors.Is(err, pools.ErrNoCapacity) {
			return err
		}
	}
	return fmt.Errorf("place a %s db: %d picks lost to concurrent claims: %w", size, placeAttempts, ErrConflict)
}

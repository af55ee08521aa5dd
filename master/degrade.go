package master

import (
	"context"
	"time"

	"github.com/granary-db/granary/metadb"
)

// degradeInterval is how often the leader looks for pairs whose writes to
// degrade or confirm again (metadb/degraded.go).
const degradeInterval = 250 * time.Millisecond

// degradeWrites degrades the writes of pairs without a replica for longer
// than DegradeAfter and confirms again those of pairs that have one (a
// replica's attach does so itself; this catches a record that raced it).
func (m *Master) degradeWrites(ctx context.Context, f *metadb.Fence) error {
	views, err := m.store.Pairs(ctx, "")
	if err != nil {
		return err
	}
	pairs := make([]metadb.Pair, len(views))
	for i, v := range views {
		pairs[i] = v.Pair
	}
	for _, d := range metadb.DecideDegrade(pairs, time.Now(), m.cfg.DegradeAfter) {
		changed, err := m.store.SetWritesDegraded(ctx, f, d.Pair, d.Degraded)
		if err != nil {
			return err
		}
		if changed {
			ev := m.log.Info()
			if d.Degraded {
				ev = m.log.Warn()
			}
			ev.Str("pair", d.Pair).Bool("degraded", d.Degraded).Dur("after", m.cfg.DegradeAfter).
				Msg("pair's confirmed writes degraded (no replica) or confirmed again")
		}
	}
	return nil
}

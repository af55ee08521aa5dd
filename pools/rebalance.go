package pools

import (
	"cmp"
	"slices"
)

// DBUsage is one db of a pair, for rebalancing: its id ("<tenant>/<index>")
// and its used bytes.
type DBUsage struct {
	ID    string
	Bytes int64
}

// PairUsage is what rebalancing needs to know of one pair of a pool.
type PairUsage struct {
	ID   string
	Live bool // only live (active) pairs give or take dbs
	Free int  // free slots
	DBs  []DBUsage
}

// Move is one db to move from one pair to another.
type Move struct {
	DB       string
	From, To string
	Bytes    int64
}

// PlanRebalance decides which dbs to move so that every live pair's used
// bytes end within tolerance of the pool's mean, moving as few dbs as it
// can. It is greedy: while the hottest live pair is more than tolerance
// above the mean or the coldest more than tolerance below, it moves one db
// from the hottest to the coldest pair that has a free slot: the one that
// leaves both nearest the mean (the larger of their two distances to it
// after the move is the smallest), among those that narrow the gap between the two (so
// every move lowers the spread and the plan ends). A db moves at most once; a pair takes no more dbs than it
// has free slots; non-live pairs are left alone. Ties go by id, so the plan
// is the same for the same input in any order. An already balanced pool
// gets no moves.
func PlanRebalance(pairs []PairUsage, tolerance int64) []Move {
	type state struct {
		id   string
		used int64
		free int
		dbs  []DBUsage
	}
	var live []*state
	var total int64
	ndbs := 0
	for _, p := range pairs {
		if !p.Live {
			continue
		}
		s := &state{id: p.ID, free: p.Free, dbs: slices.Clone(p.DBs)}
		slices.SortFunc(s.dbs, func(a, b DBUsage) int { return cmp.Compare(a.ID, b.ID) })
		for _, d := range p.DBs {
			s.used += d.Bytes
		}
		total += s.used
		ndbs += len(p.DBs)
		live = append(live, s)
	}
	if len(live) < 2 {
		return nil
	}
	mean := total / int64(len(live))
	moved := map[string]bool{}
	var plan []Move
	byUsed := func(a, b *state) int {
		if c := cmp.Compare(a.used, b.used); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	}
	for range ndbs + 1 { // bounded: every db moves at most once
		slices.SortFunc(live, byUsed)
		hot := live[len(live)-1]
		if hot.used-mean <= tolerance && mean-live[0].used <= tolerance {
			break
		}
		best, bestTo := -1, (*state)(nil)
		var bestScore int64
		for _, cold := range live[:len(live)-1] { // coldest first
			if cold.free <= 0 || cold.used >= hot.used {
				continue
			}
			gap := hot.used - cold.used
			for i, d := range hot.dbs {
				if moved[d.ID] || d.Bytes <= 0 || d.Bytes >= gap {
					continue
				}
				score := max(abs(hot.used-d.Bytes-mean), abs(cold.used+d.Bytes-mean))
				if best < 0 || score < bestScore {
					best, bestTo, bestScore = i, cold, score
				}
			}
			if best >= 0 {
				break
			}
		}
		if best < 0 {
			break
		}
		d := hot.dbs[best]
		hot.dbs = slices.Delete(hot.dbs, best, best+1)
		hot.used, hot.free = hot.used-d.Bytes, hot.free+1
		bestTo.dbs = append(bestTo.dbs, d)
		bestTo.used, bestTo.free = bestTo.used+d.Bytes, bestTo.free-1
		moved[d.ID] = true
		plan = append(plan, Move{DB: d.ID, From: hot.id, To: bestTo.id, Bytes: d.Bytes})
	}
	return plan
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

package pools

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func dbs(prefix string, bytes ...int64) []DBUsage {
	out := make([]DBUsage, len(bytes))
	for i, b := range bytes {
		out[i] = DBUsage{ID: fmt.Sprintf("%s/%d", prefix, i), Bytes: b}
	}
	return out
}

// usedAfter applies plan to pairs and returns each pair's used bytes and
// free slots.
func usedAfter(t *testing.T, pairs []PairUsage, plan []Move) (map[string]int64, map[string]int) {
	t.Helper()
	used, free, where := map[string]int64{}, map[string]int{}, map[string]string{}
	for _, p := range pairs {
		free[p.ID] = p.Free
		for _, d := range p.DBs {
			used[p.ID] += d.Bytes
			where[d.ID] = p.ID
		}
	}
	for _, m := range plan {
		if where[m.DB] != m.From {
			t.Fatalf("move %+v: the db is on %s", m, where[m.DB])
		}
		used[m.From] -= m.Bytes
		used[m.To] += m.Bytes
		free[m.From]++
		free[m.To]--
		if free[m.To] < 0 {
			t.Fatalf("move %+v: %s has no free slot", m, m.To)
		}
		where[m.DB] = m.To
	}
	return used, free
}

const mb = 1 << 20

func TestPlanRebalance(t *testing.T) {
	tests := []struct {
		name      string
		pairs     []PairUsage
		tolerance int64
		moves     int    // exact number of moves wanted (the fewest that do it)
		within    bool   // every live pair ends within tolerance of the mean
		never     string // a pair that must take no db
	}{
		{name: "no pairs"},
		{name: "one pair", pairs: []PairUsage{{ID: "p1", Live: true, Free: 3, DBs: dbs("a", 50*mb, 10*mb)}}, tolerance: mb},
		{name: "already balanced", tolerance: 5 * mb, within: true, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 30*mb, 20*mb)},
			{ID: "p2", Live: true, Free: 2, DBs: dbs("b", 48*mb)},
			{ID: "p3", Live: true, Free: 2, DBs: dbs("c", 25*mb, 27*mb)},
		}},
		{name: "one hot pair: its one big db moves, not the small ones", tolerance: 10 * mb, moves: 1, within: true, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 4, DBs: dbs("a", 5*mb, 30*mb, 5*mb, 5*mb)},
			{ID: "p2", Live: true, Free: 8, DBs: dbs("b", 5*mb)},
		}},
		{name: "one hot pair, two cold: the fewest moves", tolerance: 15 * mb, moves: 2, within: true, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 40*mb, 40*mb, 10*mb, 10*mb, 5*mb, 5*mb)},
			{ID: "p2", Live: true, Free: 8, DBs: dbs("b", 10*mb)},
			{ID: "p3", Live: true, Free: 8, DBs: dbs("c", 10*mb)},
		}},
		{name: "a full cold pair takes nothing", tolerance: 5 * mb, never: "p2", pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 30*mb, 30*mb, 30*mb)},
			{ID: "p2", Live: true, Free: 0, DBs: dbs("b", 1*mb)},
			{ID: "p3", Live: true, Free: 1, DBs: dbs("c", 20*mb)},
		}, moves: 1},
		{name: "a drained pair is left alone", tolerance: 5 * mb, never: "p3", moves: 1, within: true, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 30*mb, 10*mb)},
			{ID: "p2", Live: true, Free: 4, DBs: dbs("b", 10*mb)},
			{ID: "p3", Live: false, Free: 8},
		}},
		{name: "a db bigger than the gap does not move", tolerance: mb, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 60*mb)},
			{ID: "p2", Live: true, Free: 2, DBs: dbs("b", 50*mb)},
		}},
		{name: "empty dbs never move", tolerance: mb, pairs: []PairUsage{
			{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 0, 0, 0)},
			{ID: "p2", Live: true, Free: 5},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := PlanRebalance(tc.pairs, tc.tolerance)
			if len(plan) != tc.moves {
				t.Fatalf("%d moves, want %d: %+v", len(plan), tc.moves, plan)
			}
			seen := map[string]bool{}
			for _, m := range plan {
				if seen[m.DB] {
					t.Fatalf("db %s moves twice: %+v", m.DB, plan)
				}
				seen[m.DB] = true
				if m.To == tc.never {
					t.Fatalf("move %+v into %s", m, tc.never)
				}
			}
			used, _ := usedAfter(t, tc.pairs, plan)
			if tc.within {
				var total int64
				n := int64(0)
				for _, p := range tc.pairs {
					if p.Live {
						total += used[p.ID]
						n++
					}
				}
				for _, p := range tc.pairs {
					if d := used[p.ID] - total/n; p.Live && (d > tc.tolerance || -d > tc.tolerance) {
						t.Fatalf("pair %s ends at %d MB, mean %d MB: %+v", p.ID, used[p.ID]/mb, total/n/mb, plan)
					}
				}
			}
		})
	}
}

// TestPlanRebalanceDeterministic: the same pool in any order gets the
// same plan.
func TestPlanRebalanceDeterministic(t *testing.T) {
	pairs := []PairUsage{
		{ID: "p1", Live: true, Free: 2, DBs: dbs("a", 20*mb, 20*mb, 20*mb, 20*mb)},
		{ID: "p2", Live: true, Free: 4, DBs: dbs("b", 20*mb)},
		{ID: "p3", Live: true, Free: 4, DBs: dbs("c", 20*mb)},
		{ID: "p4", Live: true, Free: 4},
	}
	want := PlanRebalance(pairs, mb)
	if len(want) == 0 {
		t.Fatal("no moves for an unbalanced pool")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := slices.Clone(pairs)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		for i := range shuffled {
			d := slices.Clone(shuffled[i].DBs)
			r.Shuffle(len(d), func(a, b int) { d[a], d[b] = d[b], d[a] })
			shuffled[i].DBs = d
		}
		if got := PlanRebalance(shuffled, mb); !slices.Equal(got, want) {
			t.Fatalf("plan %+v, want %+v", got, want)
		}
	}
}

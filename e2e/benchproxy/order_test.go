package main

import (
	"slices"
	"strings"
	"testing"
)

// TestOrder: over two rounds per target, every target runs first and last
// equally often, and each target follows each of its neighbours in the
// cycle equally often; three targets in six rounds take all six orders.
func TestOrder(t *testing.T) {
	for _, names := range [][]string{{"a", "b", "c"}, {"a", "b", "c", "d"}, {"a", "b", "c", "d", "e"}} {
		rounds := 2 * len(names)
		first, last := map[string]int{}, map[string]int{}
		after := map[[2]string]int{} // {before, target}
		seen := map[string]bool{}
		for r := 0; r < rounds; r++ {
			o := order(names, r)
			if len(o) != len(names) || !sameSet(o, names) {
				t.Fatalf("%v round %d: %v", names, r, o)
			}
			seen[strings.Join(o, "")] = true
			first[o[0]]++
			last[o[len(o)-1]]++
			for i := 1; i < len(o); i++ {
				after[[2]string{o[i-1], o[i]}]++
			}
		}
		for _, n := range names {
			if first[n] != 2 || last[n] != 2 {
				t.Errorf("%v: %s first %d and last %d times in %d rounds, want 2 and 2", names, n, first[n], last[n], rounds)
			}
		}
		for i, n := range names {
			prev := names[(i+len(names)-1)%len(names)]
			next := names[(i+1)%len(names)]
			if a, b := after[[2]string{prev, n}], after[[2]string{next, n}]; a != b {
				t.Errorf("%v: %s follows %s %d times and %s %d times", names, n, prev, a, next, b)
			}
		}
		if len(names) == 3 && len(seen) != 6 {
			t.Errorf("three targets took %d orders in six rounds, want 6", len(seen))
		}
	}
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

package metadb

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/granary-db/granary/pools"
)

// TestPlace drives the one placement path against a real metadb: which pair
// claim is called with, how a lost race leads to a re-pick, and what Place
// returns when there is no room, when every race is lost and when claim
// fails for its own reasons.
func TestPlace(t *testing.T) {
	// take claims a real slot of p for tenant acme.
	take := func(ctx context.Context, s *Store, p *Pair, job string) error {
		_, _, err := s.ClaimDB(ctx, "acme", p, WriteAsync, 64<<20, 1000, job)
		return err
	}
	tests := []struct {
		name    string
		slots   []int // free slots of each 64M pair; negative for a degraded pair
		exclude int   // index of the pair to exclude, -1 for none
		// claim is what the caller's claim does on its nth call (from 0).
		claim     func(ctx context.Context, s *Store, n int, p *Pair) error
		wantCalls []int // indexes of the pairs claim was called with
		want      error // an error the result must wrap, nil for success
		notWant   error // an error the result must not wrap
	}{
		{
			name: "most free pair", slots: []int{2, 4, 3}, exclude: -1,
			wantCalls: []int{1},
		},
		{
			name: "excluded pair never picked", slots: []int{4, 1}, exclude: 0,
			wantCalls: []int{1},
		},
		{
			name: "degraded pair never picked", slots: []int{-4, 1}, exclude: -1,
			wantCalls: []int{1},
		},
		{
			name: "empty pool", exclude: -1,
			want: pools.ErrEmptyPool,
		},
		{
			name: "only the excluded pair", slots: []int{4}, exclude: 0,
			want: pools.ErrNoCapacity,
		},
		{
			name: "full pool", slots: []int{0, 0}, exclude: -1,
			want: pools.ErrNoCapacity, notWant: pools.ErrEmptyPool,
		},
		{
			name: "only a degraded pair has room", slots: []int{-4, 0}, exclude: -1,
			want: pools.ErrNoCapacity, notWant: pools.ErrEmptyPool,
		},
		{
			// Racing creates empty the chosen pair before the claim runs:
			// the claim finds it full, and Place looks again.
			name: "re-pick after a lost race", slots: []int{3, 2}, exclude: -1,
			claim: func(ctx context.Context, s *Store, n int, p *Pair) error {
				if n == 0 {
					for i := range 3 {
						if err := take(ctx, s, p, fmt.Sprintf("racer%d", i)); err != nil {
							return err
						}
					}
				}
				return take(ctx, s, p, fmt.Sprintf("claim%d", n))
			},
			wantCalls: []int{0, 1},
		},
		{
			name: "every race lost", slots: []int{3, 2}, exclude: -1,
			claim: func(ctx context.Context, s *Store, n int, p *Pair) error {
				return fmt.Errorf("pair %s: %w", p.ID, pools.ErrNoCapacity)
			},
			wantCalls: []int{0, 0, 0, 0, 0},
			want:      ErrConflict, notWant: pools.ErrNoCapacity,
		},
		{
			name: "claim's own error", slots: []int{3}, exclude: -1,
			claim: func(ctx context.Context, s *Store, n int, p *Pair) error {
				return fmt.Errorf("%w (1)", ErrTenantLimit)
			},
			wantCalls: []int{0},
			want:      ErrTenantLimit,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t)
			ctx := testCtx(t)
			mustTenant(t, s, "acme")
			mustTenant(t, s, "filler")
			var ps []*Pair
			index := map[string]int{}
			for i, n := range tc.slots {
				free := max(n, -n)
				p := addPair(t, s, "64M", max(free, 1)) // a pair has one db at least
				if free == 0 {
					if _, _, err := s.ClaimDB(ctx, "filler", p, WriteAsync, 64<<20, 1000, fmt.Sprintf("fill%d", i)); err != nil {
						t.Fatal(err)
					}
				}
				if n < 0 {
					if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.State = PairDegraded; return nil }); err != nil {
						t.Fatal(err)
					}
				}
				ps = append(ps, p)
				index[p.ID] = i
			}
			exclude := ""
			if tc.exclude >= 0 {
				exclude = ps[tc.exclude].ID
			}
			claim := tc.claim
			if claim == nil {
				claim = func(ctx context.Context, s *Store, n int, p *Pair) error {
					return take(ctx, s, p, fmt.Sprintf("claim%d", n))
				}
			}
			var calls []int
			err := s.Place(ctx, pools.Size64M, exclude, func(ctx context.Context, p *Pair) error {
				n := len(calls)
				calls = append(calls, index[p.ID])
				return claim(ctx, s, n, p)
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Place: got %v, want %v", err, tc.want)
			}
			if tc.notWant != nil && errors.Is(err, tc.notWant) {
				t.Errorf("Place: got %v, want an error that is not %v", err, tc.notWant)
			}
			if fmt.Sprint(calls) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("claim called with pairs %v, want %v", calls, tc.wantCalls)
			}
		})
	}
}

package metadb

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

func pairFree(ps []PairView) string {
	out := ""
	for _, p := range ps {
		out += fmt.Sprintf("%s:%s:%d/%d ", p.ID, p.Size, p.Free, len(p.DBs))
	}
	return out
}

func TestAddPairAndSpare(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p1, err := s.AddPair(ctx, "64M", "m1:6379", "r1:6379", []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddSpare(ctx, "s1:6379"); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		add  func() error
	}{
		{"pair with a registered master", func() error {
			_, err := s.AddPair(ctx, "64M", "m1:6379", "new1:6379", []int{0})
			return err
		}},
		{"pair with a registered replica", func() error {
			_, err := s.AddPair(ctx, "64M", "new1:6379", "r1:6379", []int{0})
			return err
		}},
		{"pair with a replica used as master", func() error {
			_, err := s.AddPair(ctx, "128M", "r1:6379", "new1:6379", []int{0})
			return err
		}},
		{"pair with a spare", func() error {
			_, err := s.AddPair(ctx, "64M", "new1:6379", "s1:6379", []int{0})
			return err
		}},
		{"spare twice", func() error { return s.AddSpare(ctx, "s1:6379") }},
		{"spare that is a pair master", func() error { return s.AddSpare(ctx, "m1:6379") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.add(); !errors.Is(err, ErrExists) {
				t.Fatalf("got %v, want %v", err, ErrExists)
			}
			// A refused add leaves nothing behind.
			if reg, err := s.AddrRegistration(ctx, "new1:6379"); err != nil || reg != "" {
				t.Errorf("registration of the other address: got %q, %v, want none", reg, err)
			}
			if ps, _ := s.Pairs(ctx, ""); len(ps) != 1 {
				t.Errorf("pairs: got %s, want only %s", pairFree(ps), p1.ID)
			}
		})
	}

	regs := map[string]string{"m1:6379": "pair " + p1.ID + " master", "r1:6379": "pair " + p1.ID + " replica", "s1:6379": "spare", "x:1": ""}
	for addr, want := range regs {
		if got, err := s.AddrRegistration(ctx, addr); err != nil || got != want {
			t.Errorf("AddrRegistration(%s): got %q, %v, want %q", addr, got, err, want)
		}
	}
	if err := s.AddSpare(ctx, "s0:6379"); err != nil {
		t.Fatal(err)
	}
	if sp, err := s.Spares(ctx); err != nil || fmt.Sprint(sp) != "[s0:6379 s1:6379]" {
		t.Errorf("Spares: got %v, %v, want [s0:6379 s1:6379]", sp, err)
	}
	if _, err := s.Pair(ctx, "p404"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Pair(p404): got %v, want %v", err, ErrNotFound)
	}
	if got, err := s.Pair(ctx, p1.ID); err != nil || got.Master != "m1:6379" || got.Replica != "r1:6379" || got.State != PairActive {
		t.Errorf("Pair(%s): got %+v, %v, want m1/r1 active", p1.ID, got, err)
	}
}

func TestPairsFreeCounts(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	var ids []string
	for i := range 11 { // past p9, so "p10" must sort after "p2"
		size := "64M"
		if i%2 == 1 {
			size = "128M"
		}
		p, err := s.AddPair(ctx, size, fmt.Sprintf("m%d:1", i), fmt.Sprintf("r%d:1", i), []int{0, 1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	p1, _ := s.Pair(ctx, ids[0])
	for j := range 3 {
		if _, _, err := s.ClaimDB(ctx, "acme", p1, WriteConfirmed, 64<<20, 8, fmt.Sprintf("c%d", j)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		size string
		want string
	}{
		{"64M", "p1:64M:1/4 p3:64M:4/4 p5:64M:4/4 p7:64M:4/4 p9:64M:4/4 p11:64M:4/4 "},
		{"128M", "p2:128M:4/4 p4:128M:4/4 p6:128M:4/4 p8:128M:4/4 p10:128M:4/4 "},
		{"", "p1:64M:1/4 p2:128M:4/4 p3:64M:4/4 p4:128M:4/4 p5:64M:4/4 p6:128M:4/4 p7:64M:4/4 p8:128M:4/4 p9:64M:4/4 p10:128M:4/4 p11:64M:4/4 "},
		{"1G", ""},
	}
	for _, tc := range tests {
		t.Run("size "+tc.size, func(t *testing.T) {
			ps, err := s.Pairs(ctx, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if got := pairFree(ps); got != tc.want {
				t.Errorf("Pairs(%q): got %s, want %s", tc.size, got, tc.want)
			}
		})
	}
}

// TestAddPairConcurrent: racing registrations of one address admit one.
func TestAddPairConcurrent(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	const n = 20
	errs := make(chan error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := s.AddPair(ctx, "64M", "shared:6379", fmt.Sprintf("r%d:6379", i), []int{0, 1})
			errs <- err
		}()
		go func() {
			defer wg.Done()
			errs <- s.AddSpare(ctx, "shared:6379")
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrExists):
			t.Errorf("add: got %v, want nil or %v", err, ErrExists)
		}
	}
	if ok != 1 {
		t.Errorf("successful registrations of one address: got %d, want 1", ok)
	}
	ps, _ := s.Pairs(ctx, "")
	spares, _ := s.Spares(ctx)
	if len(ps)+len(spares) != 1 {
		t.Errorf("records: got pairs %s and spares %v, want exactly one of them", pairFree(ps), spares)
	}
}

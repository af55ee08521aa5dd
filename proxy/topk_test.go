package proxy

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestTopKGuarantee checks space-saving's guarantees on streams of several
// shapes: every key whose true count exceeds W/m is reported, every
// counter's count is within [true, true+err] with err ≤ W/m, and the
// summary never holds more than m counters.
func TestTopKGuarantee(t *testing.T) {
	cases := []struct {
		name   string
		m      int
		n      int
		stream func(r *rand.Rand, i int) string
	}{
		{"zipf", 64, 200_000, func() func(r *rand.Rand, i int) string {
			var z *rand.Zipf
			return func(r *rand.Rand, i int) string {
				if z == nil {
					z = rand.NewZipf(r, 1.1, 1, 100_000)
				}
				return fmt.Sprintf("k%d", z.Uint64())
			}
		}()},
		{"uniform with planted", 32, 100_000, func(r *rand.Rand, i int) string {
			if i%10 == 0 {
				return fmt.Sprintf("hot%d", i%7) // 7 keys, ~1.4% each
			}
			return fmt.Sprintf("k%d", r.IntN(50_000))
		}},
		{"all distinct", 16, 50_000, func(r *rand.Rand, i int) string { return fmt.Sprintf("k%d", i) }},
		{"adversarial tail", 8, 20_000, func(r *rand.Rand, i int) string {
			if i < 10_000 {
				return fmt.Sprintf("early%d", i%4)
			}
			return fmt.Sprintf("late%d", i)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			tk := newTopK(tc.m)
			truth := map[string]float64{}
			for i := 0; i < tc.n; i++ {
				k := tc.stream(r, i)
				truth[k]++
				tk.offer([]byte(k), 1)
				if len(tk.heap) > tc.m || len(tk.index) > tc.m {
					t.Fatalf("after %d offers: %d counters, %d index entries, want at most %d", i+1, len(tk.heap), len(tk.index), tc.m)
				}
			}
			checkTopK(t, tk, truth, float64(tc.n))
		})
	}
}

func checkTopK(t *testing.T, tk *topK, truth map[string]float64, total float64) {
	t.Helper()
	bound := total / float64(tk.m)
	got := map[string]hotCount{}
	for _, h := range tk.top(tk.m) {
		got[h.key] = h
		tr := truth[h.key]
		if h.count < tr-1e-6 || h.count-h.err > tr+1e-6 || h.err > bound+1e-6 {
			t.Fatalf("key %s: count %.2f err %.2f, true %.2f, bound %.2f", h.key, h.count, h.err, tr, bound)
		}
	}
	for k, n := range truth {
		if n > bound {
			if _, ok := got[k]; !ok {
				t.Fatalf("key %s has true count %.0f > W/m = %.1f but is not reported", k, n, bound)
			}
		}
	}
	for i := range tk.heap {
		if l := 2*i + 1; l < len(tk.heap) && tk.less(l, i) {
			t.Fatalf("heap order broken at %d", i)
		}
		if tk.heap[i].pos != i || tk.index[tk.heap[i].key] != tk.heap[i] {
			t.Fatalf("heap position or index broken at %d", i)
		}
	}
}

// TestTopKDecay: scaling keeps the guarantee on the scaled stream, and a
// key that turns hot after the decay rises to the top.
func TestTopKDecay(t *testing.T) {
	tk := newTopK(16)
	truth := map[string]float64{}
	for round := 0; round < 20; round++ {
		for i := 0; i < 1000; i++ {
			k := fmt.Sprintf("k%d", (i*7919+round)%300)
			if round >= 15 && i%4 == 0 {
				k = "late-hot"
			}
			tk.offer([]byte(k), 1)
			truth[k]++
		}
		tk.scale(0.5)
		for k := range truth {
			truth[k] *= 0.5
		}
	}
	checkTopK(t, tk, truth, tk.total)
	if top := tk.top(1); top[0].key != "late-hot" {
		t.Fatalf("top after decay: %+v, want late-hot", top)
	}
}

// TestTopKLongKeys: long names are kept by their prefix, reported with
// "...", and cost at most maxHotKeyLen bytes each.
func TestTopKLongKeys(t *testing.T) {
	tk := newTopK(4)
	long := strings.Repeat("x", 10_000)
	for i := 0; i < 100; i++ {
		tk.offer([]byte(long+fmt.Sprint(i)), 1)
	}
	tk.offer([]byte("short"), 1)
	top := tk.top(4)
	if top[0].key != strings.Repeat("x", maxHotKeyLen)+"..." || top[0].count != 100 {
		t.Fatalf("long key reported as %.20q… count %v", top[0].key, top[0].count)
	}
	for _, c := range tk.heap {
		if len(c.key) > maxHotKeyLen {
			t.Fatalf("a counter keeps %d bytes of name", len(c.key))
		}
	}
}

// TestTopKOfferNoAlloc: counting a key that already has a counter does not
// allocate.
func TestTopKOfferNoAlloc(t *testing.T) {
	tk := newTopK(8)
	k := []byte("some:key")
	tk.offer(k, 1)
	if n := testing.AllocsPerRun(1000, func() { tk.offer(k, 1) }); n != 0 {
		t.Fatalf("offer of a counted key: %v allocations", n)
	}
}

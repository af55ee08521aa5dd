package keeper

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

func momentsOf(xs ...int64) moments {
	var m moments
	for _, x := range xs {
		m.add(x)
	}
	return m
}

// halves is n values, half 0 and half 2·mean: mean `mean`, variance ≈ mean².
func halves(n int, mean int64) moments {
	var m moments
	for i := 0; i < n; i++ {
		m.add(int64(i%2) * 2 * mean)
	}
	return m
}

func TestMoments(t *testing.T) {
	m := momentsOf(2, 4, 4, 4, 5, 5, 7, 9)
	if m.n != 8 || m.sum != 40 || m.mean != 5 {
		t.Fatalf("got n=%d sum=%d mean=%v, want 8, 40, 5", m.n, m.sum, m.mean)
	}
	if got, want := m.variance(), 32.0/7; math.Abs(got-want) > 1e-12 {
		t.Fatalf("got variance %v, want %v", got, want)
	}
	if got := momentsOf(7).variance(); got != 0 {
		t.Fatalf("got variance of one value %v, want 0", got)
	}
}

func TestTQuantile(t *testing.T) {
	// Two-sided 95% quantiles of Student's t.
	for _, tc := range []struct {
		df   int64
		want float64
		tol  float64
	}{
		{5, 2.5706, 0.01},
		{10, 2.2281, 0.002},
		{30, 2.0423, 0.001},
		{1000, 1.9623, 0.001},
	} {
		if got := tQuantile(tc.df); math.Abs(got-tc.want)/tc.want > tc.tol {
			t.Errorf("df %d: got %v, want %v within %v", tc.df, got, tc.want, tc.tol)
		}
	}
}

func TestEstimate(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    observation
		want Estimate
	}{
		{
			name: "empty db",
			o:    observation{complete: true},
			want: Estimate{Exact: true},
		},
		{
			name: "full pass is exact",
			o:    observation{keys: 4, sampled: momentsOf(10, 20, 30, 40), complete: true},
			want: Estimate{Bytes: 100, Exact: true, Keys: 4, Measured: 4},
		},
		{
			name: "sample scaled by key count, t interval with fpc",
			o:    observation{keys: 100, sampled: momentsOf(10, 20, 30, 40)},
			// 100·25; t(3)·100·sqrt(0.96·166.67/4)
			want: Estimate{Bytes: 2500, ErrorBytes: 1939, Keys: 100, Measured: 4},
		},
		{
			name: "certain stratum added exactly, sampled stratum scaled",
			o: observation{keys: 1000, certainKeys: 2, certainBytes: 5000,
				sampled: momentsOf(10, 20, 30, 40, 50)},
			// 5000 + 998·30; t(4)·998·sqrt((1-5/998)·250/5)
			want: Estimate{Bytes: 34940, ErrorBytes: 19214, Keys: 1000, Measured: 7},
		},
		{
			name: "sample of every key outside the stratum has no error",
			o:    observation{keys: 6, certainKeys: 2, certainBytes: 1000, sampled: momentsOf(10, 20, 30, 40)},
			want: Estimate{Bytes: 1100, Keys: 6, Measured: 6},
		},
		{
			name: "keys added during the pass: the sample is the population",
			o:    observation{keys: 2, sampled: momentsOf(10, 20, 30)},
			want: Estimate{Bytes: 60, Keys: 2, Measured: 3},
		},
		{
			name: "nothing sampled: the error is the whole estimate",
			o:    observation{keys: 50, certainKeys: 1, certainBytes: 700},
			want: Estimate{Bytes: 700, ErrorBytes: 700, Keys: 50, Measured: 1},
		},
		{
			name: "one key sampled: no variance, the error is the whole estimate",
			o:    observation{keys: 50, sampled: momentsOf(10)},
			want: Estimate{Bytes: 500, ErrorBytes: 500, Keys: 50, Measured: 1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := estimate(tc.o); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSampleTarget(t *testing.T) {
	plan := samplePlan{pilot: 100, max: 20000, target: 0.02}
	for _, tc := range []struct {
		name string
		o    observation
		plan samplePlan
		want int64
	}{
		{
			name: "no spread: the pilot is enough",
			o:    observation{keys: 1000000, sampled: momentsOf(100, 100, 100, 100)},
			plan: plan,
			want: 100,
		},
		{
			name: "cv 1 at ±2%: about (1.96/0.02)² keys",
			o:    observation{keys: 1000000, sampled: halves(1000, 100)},
			plan: plan,
			want: 9545,
		},
		{
			name: "capped at max",
			o:    observation{keys: 1000000, sampled: halves(1000, 100)},
			plan: samplePlan{pilot: 100, max: 5000, target: 0.02},
			want: 5000,
		},
		{
			name: "finite population correction on a small db",
			o:    observation{keys: 5000, sampled: halves(1000, 100)},
			plan: plan,
			want: 3292,
		},
		{
			name: "never more than the db",
			o:    observation{keys: 300, sampled: halves(200, 100)},
			plan: samplePlan{pilot: 100, max: 20000, target: 0.001},
			want: 300,
		},
		{
			name: "pilot larger than the db",
			o:    observation{keys: 50, sampled: halves(10, 100)},
			plan: plan,
			want: 50,
		},
		{
			name: "certain bytes are exact, so the sampled stratum may err more",
			o:    observation{keys: 1000000, certainKeys: 10, certainBytes: 100000000, sampled: halves(1000, 100)},
			plan: plan,
			want: 2404,
		},
		{
			name: "before any spread is known: the pilot",
			o:    observation{keys: 1000000, sampled: momentsOf(5)},
			plan: plan,
			want: 100,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sampleTarget(tc.o, tc.plan); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestTopKeys(t *testing.T) {
	top := topKeys{k: 3}
	for i, s := range []int64{5, 1, 9, 3, 7, 2, 8} {
		top.offer(string(rune('a'+i)), s)
	}
	got := bigKeys(top.keys, 1, 1, 10)
	if want := []string{"c", "g", "e"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	none := topKeys{}
	none.offer("a", 1)
	if len(none.keys) != 0 {
		t.Fatalf("got %v kept with k=0, want none", none.keys)
	}
}

func TestBigKeys(t *testing.T) {
	cands := []keySize{{"s", 10}, {"h", 5000}, {"l", 900}, {"z", 2000}, {"h", 5000}, {"m", 160}}
	for _, tc := range []struct {
		name   string
		mean   float64
		factor float64
		max    int
		want   []string
	}{
		{"at least factor·mean, largest first, deduplicated", 10, 16, 10, []string{"h", "z", "l", "m"}},
		{"at most max", 10, 16, 2, []string{"h", "z"}},
		{"a higher mean raises the bar", 200, 16, 10, []string{"h"}},
		{"none big enough", 1000, 16, 10, nil},
		{"no stratum wanted", 10, 16, 0, nil},
		{"no mean known", 0, 16, 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := bigKeys(cands, tc.mean, tc.factor, tc.max); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestIntervalCoverage draws many samples without replacement from a skewed
// population in memory and checks that the 95% interval holds the true sum
// about 95% of the time: the error bound means what it says. The seed is
// fixed, so the test is deterministic.
func TestIntervalCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const N = 20000
	pop := make([]int64, N)
	var total int64
	for i := range pop {
		// log-uniform 60 B .. 60 KB, like the mixed test dbs.
		pop[i] = int64(60 * math.Pow(1000, r.Float64()))
		total += pop[i]
	}
	for _, n := range []int{500, 2000, 8000} {
		const trials = 400
		covered, within5 := 0, 0
		idx := make([]int, N)
		for i := range idx {
			idx[i] = i
		}
		for trial := 0; trial < trials; trial++ {
			r.Shuffle(N, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
			o := observation{keys: N}
			for _, i := range idx[:n] {
				o.sampled.add(pop[i])
			}
			e := estimate(o)
			d := math.Abs(float64(e.Bytes - total))
			if d <= float64(e.ErrorBytes) {
				covered++
			}
			if d <= 0.05*float64(total) {
				within5++
			}
		}
		got := float64(covered) / trials
		t.Logf("n=%d: interval covered %.1f%%, within ±5%% %d/%d", n, 100*got, within5, trials)
		if got < 0.91 || got > 0.99 {
			t.Errorf("n=%d: got coverage %.3f, want about 0.95", n, got)
		}
	}
}

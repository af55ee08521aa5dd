package keeper

import (
	"math"
	"sort"
)

// This file is the arithmetic of sizing, with no I/O: how a sample of key
// sizes becomes an estimate of a db's memory with an error bound, how many
// keys to sample, and which keys to always measure.
//
// The model. A db has N keys (DBSIZE) with sizes x_i (MEMORY USAGE); we want
// T = Σ x_i. The keys split into two strata:
//
//   - the certain stratum A: the few big keys known from earlier
//     measurements, each measured every time (a take-all stratum), and
//   - the sampled stratum B: every other key, N_B = N - |A| of them, of which
//     a simple random sample of n is measured.
//
// Then T̂ = Σ_A x + N_B·x̄_B, unbiased, with
// Var(T̂) = N_B²·(1 - n/N_B)·s²_B/n (finite population correction included),
// where s²_B is the sample variance. Heavy-tailed dbs (a few keys holding most
// of the memory) are what makes plain sampling miss; moving those keys into A
// takes their variance out of the estimate entirely.

// moments accumulates the count, sum, mean and variance of key sizes
// (Welford's algorithm, stable for millions of values).
type moments struct {
	n    int64
	sum  int64
	mean float64
	m2   float64
}

func (m *moments) add(x int64) {
	m.n++
	m.sum += x
	d := float64(x) - m.mean
	m.mean += d / float64(m.n)
	m.m2 += d * (float64(x) - m.mean)
}

// variance is the sample variance (n-1 denominator); 0 below two values.
func (m moments) variance() float64 {
	if m.n < 2 {
		return 0
	}
	return m.m2 / float64(m.n-1)
}

// observation is what one measurement pass saw of a db.
type observation struct {
	// keys is the db's key count when the pass started.
	keys int64
	// certainKeys and certainBytes: the keys of stratum A that exist, and
	// their summed sizes.
	certainKeys  int64
	certainBytes int64
	// sampled are the sizes of the distinct stratum-B keys measured.
	sampled moments
	// complete is set when the pass visited every key (a full SCAN), so
	// the sum is exact.
	complete bool
}

// Estimate is a db's measured memory.
type Estimate struct {
	// Bytes is the estimate of Σ MEMORY USAGE over the db's keys.
	Bytes int64
	// ErrorBytes is the half-width of the ~95% confidence interval of Bytes
	// (0 when Exact). With fewer than two sampled keys it is Bytes itself.
	ErrorBytes int64
	Exact      bool
	// Keys is the key count; Measured how many keys' sizes were read.
	Keys     int64
	Measured int64
}

// zQuantile is the standard normal quantile of the two-sided 95% level
// that ErrorBytes is given at.
const zQuantile = 1.959963984540054

// tQuantile approximates Student's t quantile for the confidence level with
// df degrees of freedom (Cornish-Fisher expansion around the normal one:
// within 1% of the exact value from df=5, 0.2% from df=10; samples here are
// hundreds of keys or more).
func tQuantile(df int64) float64 {
	if df < 1 {
		return math.Inf(1)
	}
	z := zQuantile
	v := float64(df)
	z3, z5 := z*z*z, z*z*z*z*z
	return z + (z3+z)/(4*v) + (5*z5+16*z3+3*z)/(96*v*v)
}

// sampledPopulation is N_B: the keys outside the certain stratum. Keys
// written during the pass can make the sample larger than the count read
// at its start; the sample then is the population.
func (o observation) sampledPopulation() int64 {
	nb := o.keys - o.certainKeys
	if nb < o.sampled.n {
		nb = o.sampled.n
	}
	return nb
}

// estimate turns an observation into an Estimate.
func estimate(o observation) Estimate {
	e := Estimate{Keys: o.keys, Measured: o.certainKeys + o.sampled.n}
	if o.complete {
		e.Bytes, e.Exact = o.certainBytes+o.sampled.sum, true
		return e
	}
	nb := o.sampledPopulation()
	n := o.sampled.n
	if n == 0 {
		e.Bytes = o.certainBytes
		if nb > 0 {
			e.ErrorBytes = e.Bytes
		}
		return e
	}
	e.Bytes = o.certainBytes + int64(math.Round(float64(nb)*o.sampled.mean))
	if n < 2 {
		e.ErrorBytes = e.Bytes
		return e
	}
	fpc := 1 - float64(n)/float64(nb)
	se := float64(nb) * math.Sqrt(fpc*o.sampled.variance()/float64(n))
	e.ErrorBytes = int64(math.Ceil(tQuantile(n-1) * se))
	return e
}

// samplePlan bounds how many stratum-B keys a sampled measurement reads.
type samplePlan struct {
	// pilot keys are read first; their spread decides the rest.
	pilot int64
	// max caps the sample whatever the spread.
	max int64
	// target is the wanted relative half-width of the interval (0.02 = ±2%).
	target float64
}

// sampleTarget is the sample size the plan asks for, given the pilot part
// of the sample: n = n₀/(1 + n₀/N_B) with n₀ = (t·s/(target·x̄))², the size
// at which the interval's half-width is target of the estimate, clamped to
// [pilot, max] and to N_B. Deciding once, from the pilot (Stein's two-stage
// procedure), instead of stopping the moment the interval looks narrow
// enough, keeps the stopping rule from favouring samples that happened to
// miss the big keys.
func sampleTarget(o observation, p samplePlan) int64 {
	nb := o.sampledPopulation()
	lo, hi := p.pilot, p.max
	if hi < lo {
		hi = lo
	}
	if hi > nb {
		hi = nb
	}
	if lo > hi {
		lo = hi
	}
	if o.sampled.n < 2 || o.sampled.mean <= 0 || p.target <= 0 {
		return lo
	}
	// The certain stratum is exact, so B may carry all of the allowed error.
	total := float64(o.certainBytes) + float64(nb)*o.sampled.mean
	allowed := p.target * total / float64(nb) // per-key mean error allowed
	cv := math.Sqrt(o.sampled.variance()) / allowed
	n0 := math.Pow(tQuantile(o.sampled.n-1)*cv, 2)
	n := n0 / (1 + n0/float64(nb))
	switch {
	case math.IsNaN(n) || n > float64(hi):
		return hi
	case n < float64(lo):
		return lo
	}
	return int64(math.Ceil(n))
}

// keySize is one key's measured size.
type keySize struct {
	key  string
	size int64
}

// topKeys keeps the k largest key sizes offered to it.
type topKeys struct {
	k    int
	keys []keySize // unordered; at most k
	min  int       // index of the smallest once full
}

func (t *topKeys) offer(key string, size int64) {
	if t.k <= 0 {
		return
	}
	if len(t.keys) < t.k {
		t.keys = append(t.keys, keySize{key, size})
		if len(t.keys) == t.k {
			t.findMin()
		}
		return
	}
	if size <= t.keys[t.min].size {
		return
	}
	t.keys[t.min] = keySize{key, size}
	t.findMin()
}

func (t *topKeys) findMin() {
	t.min = 0
	for i, ks := range t.keys {
		if ks.size < t.keys[t.min].size {
			t.min = i
		}
	}
}

// bigKeys picks the next certain stratum: from the candidates (the current
// certain keys with their new sizes, and the largest keys just sampled), the
// keys at least factor times the mean key size, largest first, at most max.
// A key is worth measuring every time only when it alone would move a sampled
// estimate by much more than a typical key does.
func bigKeys(cands []keySize, mean float64, factor float64, max int) []string {
	if max <= 0 || mean <= 0 {
		return nil
	}
	sorted := append([]keySize(nil), cands...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].size != sorted[j].size {
			return sorted[i].size > sorted[j].size
		}
		return sorted[i].key < sorted[j].key
	})
	var out []string
	seen := map[string]bool{}
	for _, c := range sorted {
		if len(out) == max || float64(c.size) < factor*mean {
			break
		}
		if !seen[c.key] {
			seen[c.key] = true
			out = append(out, c.key)
		}
	}
	return out
}

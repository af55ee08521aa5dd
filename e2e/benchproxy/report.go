package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// Target names, as printed.
const (
	tDirect    = "direct"
	tTwem      = "twemproxy"
	tAsync     = "granary-async"
	tConfirmed = "granary-confirmed"
	tAsyncB    = "granary-b" // --bin-b's proxy, async db
	tNaive     = "naive-info"
)

// cfgKey names one configuration measured every round.
type cfgKey struct {
	target string
	test   string // SET or GET
	pipe   int
}

func (k cfgKey) String() string { return fmt.Sprintf("%s %s P%d", k.target, k.test, k.pipe) }

// results holds every round's sample of every configuration; runs[k][i] is
// round i, so ratios can be taken within a round before the median.
type results struct {
	order []cfgKey
	runs  map[cfgKey][]sample
}

func (r *results) add(k cfgKey, s sample) {
	if r.runs == nil {
		r.runs = map[cfgKey][]sample{}
	}
	if _, ok := r.runs[k]; !ok {
		r.order = append(r.order, k)
	}
	r.runs[k] = append(r.runs[k], s)
}

// median of the values that are not NaN; NaN when there are none.
func median(xs []float64) float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func (r *results) field(k cfgKey, f func(sample) float64) []float64 {
	var out []float64
	for _, s := range r.runs[k] {
		out = append(out, f(s))
	}
	return out
}

func rps(s sample) float64  { return s.rps }
func p50(s sample) float64  { return s.p50 }
func p99(s sample) float64  { return s.p99 }
func cpu(s sample) float64  { return s.cpu }
func rcpu(s sample) float64 { return s.rcpu }
func lcpu(s sample) float64 { return s.lcpu }

// perRead is how many requests the serving Redis took in per read.
func perRead(s sample) float64 { return s.perRead }

// hopCPU is what the proxy and the Redis pair spent per request together.
func hopCPU(s sample) float64 { return s.cpu + s.rcpu }

func requestsOf(s sample) float64 {
	if s.err != nil {
		return math.NaN()
	}
	return float64(s.requests)
}

// check is one ratio num/den of a field, taken round by round; op and bar
// are the target ("" for figures printed for orientation only).
type check struct {
	name     string
	num, den cfgKey
	f        func(sample) float64
	op       string
	bar      float64
}

func checks(withB bool) []check {
	k := func(t, test string, p int) cfgKey { return cfgKey{t, test, p} }
	var cs []check
	for _, p := range []int{1, 16} {
		bar := 1.0
		if p == 16 {
			bar = 1.2
		}
		for _, test := range []string{"GET", "SET"} {
			cs = append(cs, check{fmt.Sprintf("granary-async/twemproxy %s P%d rps", test, p),
				k(tAsync, test, p), k(tTwem, test, p), rps, ">=", bar})
		}
	}
	for _, test := range []string{"GET", "SET"} {
		cs = append(cs, check{fmt.Sprintf("granary-async/twemproxy %s P1 p50", test),
			k(tAsync, test, 1), k(tTwem, test, 1), p50, "<=", 1.2})
	}
	cs = append(cs,
		check{"confirmed/async SET P1 rps", k(tConfirmed, "SET", 1), k(tAsync, "SET", 1), rps, ">=", 0.6},
		check{"confirmed/naive-info SET P1 rps", k(tConfirmed, "SET", 1), k(tNaive, "SET", 1), rps, ">=", 2.0},
		check{"confirmed/async SET P16 rps", k(tConfirmed, "SET", 16), k(tAsync, "SET", 16), rps, "", 0},
	)
	for _, p := range []int{1, 16} {
		for _, test := range []string{"GET", "SET"} {
			cs = append(cs,
				check{fmt.Sprintf("twemproxy/direct %s P%d rps", test, p), k(tTwem, test, p), k(tDirect, test, p), rps, "", 0},
				check{fmt.Sprintf("granary-async/direct %s P%d rps", test, p), k(tAsync, test, p), k(tDirect, test, p), rps, "", 0},
				check{fmt.Sprintf("granary-async/twemproxy %s P%d cpu/req", test, p), k(tAsync, test, p), k(tTwem, test, p), cpu, "", 0},
				check{fmt.Sprintf("granary-async/twemproxy %s P%d proxy+Redis cpu/req", test, p), k(tAsync, test, p), k(tTwem, test, p), hopCPU, "", 0})
			if withB {
				cs = append(cs,
					check{fmt.Sprintf("granary-b/granary-async %s P%d rps", test, p), k(tAsyncB, test, p), k(tAsync, test, p), rps, "", 0},
					check{fmt.Sprintf("granary-b/granary-async %s P%d cpu/req", test, p), k(tAsyncB, test, p), k(tAsync, test, p), cpu, "", 0},
					check{fmt.Sprintf("granary-b/twemproxy %s P%d rps", test, p), k(tAsyncB, test, p), k(tTwem, test, p), rps, "", 0})
			}
		}
	}
	return cs
}

// ratios returns the median and range of num/den over the rounds.
func (r *results) ratios(c check) (med, lo, hi float64) {
	num, den := r.field(c.num, c.f), r.field(c.den, c.f)
	var rs []float64
	for i := 0; i < len(num) && i < len(den); i++ {
		rs = append(rs, num[i]/den[i])
	}
	med = median(rs)
	lo, hi = math.NaN(), math.NaN()
	for _, x := range rs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		if math.IsNaN(lo) || x < lo {
			lo = x
		}
		if math.IsNaN(hi) || x > hi {
			hi = x
		}
	}
	return med, lo, hi
}

// verdict compares a median ratio with its target: PASS or MISS and by
// how much (relative to the bar).
func verdict(c check, med float64) string {
	switch {
	case c.op == "":
		return ""
	case math.IsNaN(med):
		return "NO DATA"
	case c.op == ">=" && med >= c.bar, c.op == "<=" && med <= c.bar:
		return "PASS"
	}
	return fmt.Sprintf("MISS (%+.0f%%)", (med/c.bar-1)*100)
}

// print writes the per-configuration medians (requests per run included),
// then the ratios, as
// Markdown tables that also read well in a terminal.
func (r *results) print(w io.Writer, withB bool) {
	rows := [][]string{{"target", "test", "P", "requests", "rps", "p50 ms", "p99 ms", "proxy CPU µs/req", "Redis CPU µs/req", "redis-benchmark CPU µs/req", "req/Redis read", "ok runs"}}
	for _, k := range r.order {
		ok := 0
		for _, s := range r.runs[k] {
			if s.err == nil {
				ok++
			}
		}
		n := num(median(r.field(k, requestsOf)), "%.0f")
		rows = append(rows, []string{k.target, k.test, fmt.Sprint(k.pipe), n,
			num(median(r.field(k, rps)), "%.0f"), num(median(r.field(k, p50)), "%.3f"),
			num(median(r.field(k, p99)), "%.3f"), num(median(r.field(k, cpu)), "%.2f"),
			num(median(r.field(k, rcpu)), "%.2f"), num(median(r.field(k, lcpu)), "%.2f"),
			num(median(r.field(k, perRead)), "%.2f"), fmt.Sprintf("%d/%d", ok, len(r.runs[k]))})
	}
	mdTable(w, rows, 2)
	fmt.Fprintln(w)
	rows = [][]string{{"ratio (median of per-round ratios)", "median", "min–max", "target", "verdict"}}
	for _, c := range checks(withB) {
		med, lo, hi := r.ratios(c)
		bar := ""
		if c.op != "" {
			bar = fmt.Sprintf("%s %.1f", c.op, c.bar)
		}
		rows = append(rows, []string{c.name, num(med, "%.2f"), num(lo, "%.2f") + "–" + num(hi, "%.2f"), bar, verdict(c, med)})
	}
	mdTable(w, rows, 1)
}

// mdTable writes rows (the first is the header) as a padded Markdown
// table; columns from index right on are right-aligned.
func mdTable(w io.Writer, rows [][]string, right int) {
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	for ri, row := range rows {
		var b strings.Builder
		b.WriteString("|")
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i >= right {
				b.WriteString(" " + pad + cell + " |")
			} else {
				b.WriteString(" " + cell + pad + " |")
			}
		}
		fmt.Fprintln(w, b.String())
		if ri == 0 {
			b.Reset()
			b.WriteString("|")
			for i := range row {
				dash := strings.Repeat("-", width[i]+1)
				if i >= right {
					b.WriteString(dash + ":|")
				} else {
					b.WriteString(":" + dash + "|")
				}
			}
			fmt.Fprintln(w, b.String())
		}
	}
}

func num(x float64, format string) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf(format, x)
}

// errorsOf lists the failed runs, for the end of the report.
func (r *results) errorsOf() []string {
	var out []string
	for _, k := range r.order {
		for i, s := range r.runs[k] {
			if s.err != nil {
				out = append(out, fmt.Sprintf("round %d %s: %v", i+1, k, strings.TrimSpace(s.err.Error())))
			}
		}
	}
	return out
}

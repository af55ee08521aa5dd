package proxy

import (
	"slices"
	"strings"
)

// topK is a space-saving summary (Metwally, Agrawal, El Abbadi 2005) of a
// weighted stream of keys in a fixed number of counters, kept in a min-heap
// by count. Offering a key that has a counter adds to it; a key that has
// none takes the smallest counter, inheriting its count as its error. With
// m counters and a stream of total weight W, every key whose true weight
// exceeds W/m has a counter, and each counter's count overestimates its
// key's true weight by at most its err (itself at most W/m). Scaling every
// count by the same factor (decay) keeps the heap in order and the
// guarantee, on the scaled stream.
//
// Its memory is bounded: at most m counters of at most maxHotKeyLen bytes
// of name. A longer name is counted by its first maxHotKeyLen bytes (so two
// long names sharing them share a counter) and reported with "..." after
// them. Not safe for concurrent use.
type topK struct {
	m     int
	heap  []*ssCounter
	index map[string]*ssCounter
	total float64
}

type ssCounter struct {
	key   string
	count float64
	err   float64
	long  bool // the key was longer than maxHotKeyLen
	pos   int
}

// maxHotKeyLen bounds the bytes of a key name a counter keeps.
const maxHotKeyLen = 128

func newTopK(m int) *topK {
	return &topK{m: m, heap: make([]*ssCounter, 0, m), index: make(map[string]*ssCounter, m)}
}

// offer counts w more for key. It allocates only when key takes a counter.
func (t *topK) offer(key []byte, w float64) {
	long := len(key) > maxHotKeyLen
	if long {
		key = key[:maxHotKeyLen]
	}
	t.total += w
	if c, ok := t.index[string(key)]; ok {
		c.count += w
		c.long = c.long || long
		t.down(c.pos)
		return
	}
	if len(t.heap) < t.m {
		c := &ssCounter{key: string(key), count: w, long: long, pos: len(t.heap)}
		t.heap = append(t.heap, c)
		t.index[c.key] = c
		t.up(c.pos)
		return
	}
	c := t.heap[0]
	delete(t.index, c.key)
	c.key, c.err, c.long = string(key), c.count, long
	c.count += w
	t.index[c.key] = c
	t.down(0)
}

// scale multiplies every count, error and the total by f (0 < f ≤ 1).
func (t *topK) scale(f float64) {
	for _, c := range t.heap {
		c.count *= f
		c.err *= f
	}
	t.total *= f
}

// hotCount is one reported key: its estimated weight (an overestimate by
// at most err).
type hotCount struct {
	key   string
	count float64
	err   float64
}

// top returns at most n keys, largest count first (ties by name).
func (t *topK) top(n int) []hotCount {
	out := make([]hotCount, 0, len(t.heap))
	for _, c := range t.heap {
		k := c.key
		if c.long {
			k += "..."
		}
		out = append(out, hotCount{key: k, count: c.count, err: c.err})
	}
	slices.SortFunc(out, func(a, b hotCount) int {
		switch {
		case a.count > b.count:
			return -1
		case a.count < b.count:
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func (t *topK) less(i, j int) bool { return t.heap[i].count < t.heap[j].count }

func (t *topK) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].pos, t.heap[j].pos = i, j
}

func (t *topK) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *topK) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		s := l
		if r := l + 1; r < n && t.less(r, l) {
			s = r
		}
		if !t.less(s, i) {
			return
		}
		t.swap(i, s)
		i = s
	}
}

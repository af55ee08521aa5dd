// Package pools holds Granary's size classes, capacity rules and placement
// decisions. It is pure: no I/O, so every decision is a table test.
package pools

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Size is a size class: the quota, in bytes, of every db in one pool.
type Size int64

const (
	mib = 1 << 20
	gib = 1 << 30

	Size32M  Size = 32 * mib
	Size64M  Size = 64 * mib
	Size128M Size = 128 * mib
	Size256M Size = 256 * mib
	Size512M Size = 512 * mib
	Size1G   Size = 1 * gib
)

// All lists every size class, smallest first.
var All = []Size{Size32M, Size64M, Size128M, Size256M, Size512M, Size1G}

// Sentinel errors of this package. ErrNoCapacity is the one error for "no
// room": a pool whose live pairs are all full, or a pair without a free slot.
// ErrEmptyPool only ever comes with it, to say the pool has no pair at all.
var (
	ErrBadSize    = errors.New("unknown size")
	ErrNoCapacity = errors.New("no free db")
	ErrEmptyPool  = errors.New("the pool has no pairs")
	ErrBadDBs     = errors.New("bad db list")
	// ErrBadPersistence is a persistence policy that is not one of
	// Persistences.
	ErrBadPersistence = errors.New("bad persistence policy")
)

// ParseSize parses "32M", "64m", "1G" … (case-insensitive). Anything that is
// not exactly one of the size classes is ErrBadSize.
func ParseSize(s string) (Size, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	for _, sz := range All {
		if u == sz.String() {
			return sz, nil
		}
	}
	return 0, fmt.Errorf("%w %q: use one of %s", ErrBadSize, s, Names())
}

// Names is the list of size names for messages: "32M 64M 128M 256M 512M 1G".
func Names() string {
	names := make([]string, len(All))
	for i, sz := range All {
		names[i] = sz.String()
	}
	return strings.Join(names, " ")
}

// String writes the size the way the API does: "64M", "1G".
func (s Size) String() string {
	if s >= gib && s%gib == 0 {
		return strconv.FormatInt(int64(s/gib), 10) + "G"
	}
	return strconv.FormatInt(int64(s/mib), 10) + "M"
}

// Bytes is the quota in bytes.
func (s Size) Bytes() int64 { return int64(s) }

// Valid reports whether s is one of the size classes.
func (s Size) Valid() bool {
	for _, sz := range All {
		if s == sz {
			return true
		}
	}
	return false
}

// MaxDBs bounds the db numbers a pair may offer (Redis's `databases` is an
// int, but a pair with more dbs than this is a typo, not a plan).
const MaxDBs = 1024

// ParseDBs parses a db list such as "0-15", "1,3,5-7" into sorted, distinct
// db numbers.
func ParseDBs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadDBs)
	}
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseDB(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseDB(hi); err != nil {
				return nil, err
			}
		}
		if b < a {
			return nil, fmt.Errorf("%w: range %q runs backwards", ErrBadDBs, part)
		}
		for n := a; n <= b; n++ {
			seen[n] = true
		}
	}
	out := make([]int, 0, len(seen))
	for n := 0; n < MaxDBs; n++ {
		if seen[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func parseDB(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n >= MaxDBs {
		return 0, fmt.Errorf("%w: %q is not a db number 0-%d", ErrBadDBs, s, MaxDBs-1)
	}
	return n, nil
}

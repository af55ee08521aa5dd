package pools

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Size
		err  error
	}{
		{name: "32M", in: "32M", want: Size32M},
		{name: "64M", in: "64M", want: Size64M},
		{name: "128M", in: "128M", want: Size128M},
		{name: "256M", in: "256M", want: Size256M},
		{name: "512M", in: "512M", want: Size512M},
		{name: "1G", in: "1G", want: Size1G},
		{name: "lower case", in: "64m", want: Size64M},
		{name: "lower case giga", in: "1g", want: Size1G},
		{name: "surrounding space", in: " 1g ", want: Size1G},
		{name: "not a class", in: "65M", err: ErrBadSize},
		{name: "unit suffix", in: "64MB", err: ErrBadSize},
		{name: "empty", in: "", err: ErrBadSize},
		{name: "only space", in: "   ", err: ErrBadSize},
		{name: "1024M is written 1G", in: "1024M", err: ErrBadSize},
		{name: "bytes", in: "67108864", err: ErrBadSize},
		{name: "no unit", in: "64", err: ErrBadSize},
		{name: "2G", in: "2G", err: ErrBadSize},
		{name: "inner space", in: "64 M", err: ErrBadSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("ParseSize(%q) error = %v, want %v", tc.in, err, tc.err)
			}
			if got != tc.want {
				t.Errorf("ParseSize(%q) = %v, want %v", tc.in, got, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), Names()) {
				t.Errorf("ParseSize(%q) error %q does not list the sizes %q", tc.in, err, Names())
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		size  Size
		want  string
		bytes int64
	}{
		{Size32M, "32M", 32 << 20},
		{Size64M, "64M", 64 << 20},
		{Size128M, "128M", 128 << 20},
		{Size256M, "256M", 256 << 20},
		{Size512M, "512M", 512 << 20},
		{Size1G, "1G", 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.size.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if got := tc.size.Bytes(); got != tc.bytes {
				t.Errorf("Bytes() = %d, want %d", got, tc.bytes)
			}
			if !tc.size.Valid() {
				t.Errorf("Valid() = false, want true")
			}
			back, err := ParseSize(tc.size.String())
			if err != nil || back != tc.size {
				t.Errorf("ParseSize(String()) = %v, %v, want %v, nil", back, err, tc.size)
			}
		})
	}
	if got, want := Names(), "32M 64M 128M 256M 512M 1G"; got != want {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	for _, s := range []Size{0, Size(65 << 20), Size(2 << 30)} {
		if s.Valid() {
			t.Errorf("Size(%d).Valid() = true, want false", int64(s))
		}
	}
}

func TestParseDBs(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []int
		err  error
	}{
		{name: "range", in: "0-15", want: seq(0, 15)},
		{name: "list and range", in: "1,3,5-7", want: []int{1, 3, 5, 6, 7}},
		{name: "single", in: "7", want: []int{7}},
		{name: "one-element range", in: "4-4", want: []int{4}},
		{name: "duplicates collapse", in: "3,1,3,2-4,1", want: []int{1, 2, 3, 4}},
		{name: "unsorted input sorted", in: "9,2,5", want: []int{2, 5, 9}},
		{name: "spaces", in: " 1 , 3 - 4 ", want: []int{1, 3, 4}},
		{name: "largest db", in: "1023", want: []int{1023}},
		{name: "full range", in: "0-1023", want: seq(0, 1023)},
		{name: "empty", in: "", err: ErrBadDBs},
		{name: "blank", in: "  ", err: ErrBadDBs},
		{name: "backwards range", in: "7-5", err: ErrBadDBs},
		{name: "negative", in: "-1", err: ErrBadDBs},
		{name: "negative end", in: "1--2", err: ErrBadDBs},
		{name: "too large", in: "1024", err: ErrBadDBs},
		{name: "range too large", in: "0-1024", err: ErrBadDBs},
		{name: "huge", in: "99999999999999999999", err: ErrBadDBs},
		{name: "garbage", in: "abc", err: ErrBadDBs},
		{name: "garbage in range", in: "1-x", err: ErrBadDBs},
		{name: "empty element", in: "1,,2", err: ErrBadDBs},
		{name: "trailing comma", in: "1,", err: ErrBadDBs},
		{name: "open range", in: "3-", err: ErrBadDBs},
		{name: "double range", in: "1-2-3", err: ErrBadDBs},
		{name: "float", in: "1.5", err: ErrBadDBs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseDBs(tc.in)
			if !errors.Is(err, tc.err) {
				t.Fatalf("ParseDBs(%q) error = %v, want %v", tc.in, err, tc.err)
			}
			if err != nil {
				if got != nil {
					t.Errorf("ParseDBs(%q) = %v with an error, want nil", tc.in, got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseDBs(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func seq(lo, hi int) []int {
	out := make([]int, 0, hi-lo+1)
	for n := lo; n <= hi; n++ {
		out = append(out, n)
	}
	return out
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"32M", "64m", "1G", " 1g ", "65M", "64MB", "", "\x00", "1024M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sz, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrBadSize) {
				t.Fatalf("ParseSize(%q) error %v does not wrap ErrBadSize", s, err)
			}
			if sz != 0 {
				t.Fatalf("ParseSize(%q) = %v with an error, want 0", s, sz)
			}
			return
		}
		if !sz.Valid() {
			t.Fatalf("ParseSize(%q) = %d, not a size class", s, int64(sz))
		}
		if got := sz.String(); !strings.EqualFold(got, strings.TrimSpace(s)) {
			t.Fatalf("ParseSize(%q).String() = %q, want %q up to case", s, got, strings.TrimSpace(s))
		}
		back, err := ParseSize(sz.String())
		if err != nil || back != sz {
			t.Fatalf("ParseSize(%q) = %v, %v, want %v, nil", sz.String(), back, err, sz)
		}
	})
}

func FuzzParseDBs(f *testing.F) {
	for _, s := range []string{"0-15", "1,3,5-7", "7-5", "-1", "1024", "a,b", "0-1023", "1,,2", " 2 - 3 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dbs, err := ParseDBs(s)
		if err != nil {
			if !errors.Is(err, ErrBadDBs) {
				t.Fatalf("ParseDBs(%q) error %v does not wrap ErrBadDBs", s, err)
			}
			return
		}
		if len(dbs) == 0 {
			t.Fatalf("ParseDBs(%q) = empty list without an error", s)
		}
		for i, d := range dbs {
			if d < 0 || d >= MaxDBs {
				t.Fatalf("ParseDBs(%q) has db %d outside 0-%d", s, d, MaxDBs-1)
			}
			if i > 0 && d <= dbs[i-1] {
				t.Fatalf("ParseDBs(%q) = %v, not sorted and distinct", s, dbs)
			}
		}
		parts := make([]string, len(dbs))
		for i, d := range dbs {
			parts[i] = strconv.Itoa(d)
		}
		back, err := ParseDBs(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(back, dbs) {
			t.Fatalf("round trip of %v = %v, %v, want %v, nil", dbs, back, err, dbs)
		}
	})
}

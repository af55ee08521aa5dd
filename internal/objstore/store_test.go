package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// storeCase is one Store under test, fresh and empty.
type storeCase struct {
	store Store
	// leftovers lists everything the backend holds, objects and whatever
	// else (checksum files, temporary files or keys, unfinished uploads),
	// sorted, so a test can check that a failed Put added nothing.
	leftovers func(t *testing.T) []string
}

// testStore runs the behaviour every Store must have against the stores
// fresh makes, one per subtest.
func testStore(t *testing.T, fresh func(t *testing.T) storeCase) {
	t.Run("RoundTrip", func(t *testing.T) {
		ctx := t.Context()
		c := fresh(t)
		s := c.store
		data := bytes.Repeat([]byte("granary"), 10000)
		info, err := s.Put(ctx, "t1/exports/e1.rdb", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != "t1/exports/e1.rdb" || info.Size != int64(len(data)) || info.SHA256 != sum(data) || info.Modified.IsZero() {
			t.Fatalf("put info %+v", info)
		}
		checkObject(t, s, "t1/exports/e1.rdb", data)
		if err := s.Delete(ctx, "t1/exports/e1.rdb"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "t1/exports/e1.rdb"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat after delete: %v, want ErrNotFound", err)
		}
		if _, _, err := s.Open(ctx, "t1/exports/e1.rdb"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("open after delete: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "t1/exports/e1.rdb"); err != nil {
			t.Fatalf("second delete: %v", err)
		}
		if left := c.leftovers(t); len(left) != 0 {
			t.Fatalf("after put and delete: %v", left)
		}
	})

	t.Run("Replace", func(t *testing.T) {
		ctx := t.Context()
		s := fresh(t).store
		for _, v := range []string{"first version", "second, longer version"} {
			info, err := s.Put(ctx, "e.rdb", strings.NewReader(v))
			if err != nil {
				t.Fatal(err)
			}
			if info.SHA256 != sum([]byte(v)) {
				t.Fatalf("put %q: info %+v", v, info)
			}
			checkObject(t, s, "e.rdb", []byte(v))
		}
	})

	t.Run("Empty", func(t *testing.T) {
		s := fresh(t).store
		if _, err := s.Put(t.Context(), "empty", strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
		checkObject(t, s, "empty", nil)
	})

	t.Run("Missing", func(t *testing.T) {
		ctx := t.Context()
		s := fresh(t).store
		if _, err := s.Stat(ctx, "never/put"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat: %v, want ErrNotFound", err)
		}
		if r, _, err := s.Open(ctx, "never/put"); !errors.Is(err, ErrNotFound) {
			if r != nil {
				r.Close()
			}
			t.Fatalf("open: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "never/put"); err != nil {
			t.Fatalf("delete: %v", err)
		}
	})

	t.Run("BadNames", func(t *testing.T) {
		ctx := t.Context()
		c := fresh(t)
		s := c.store
		for _, name := range []string{"", "..", "../x", "a/../../x", "/abs", "a//b", "a/.", "a/", ".hidden", "a/.incoming/x",
			"x.sha256", "a b", "a\x00b", "é", strings.Repeat("a", 600)} {
			if _, err := s.Put(ctx, name, strings.NewReader("x")); err == nil {
				t.Errorf("put %q: no error", name)
			}
			if r, _, err := s.Open(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
				if r != nil {
					r.Close()
				}
				t.Errorf("open %q: %v, want a bad name error", name, err)
			}
			if _, err := s.Stat(ctx, name); err == nil || errors.Is(err, ErrNotFound) {
				t.Errorf("stat %q: %v, want a bad name error", name, err)
			}
			if err := s.Delete(ctx, name); err == nil {
				t.Errorf("delete %q: no error", name)
			}
		}
		if left := c.leftovers(t); len(left) != 0 {
			t.Fatalf("bad names left behind %v", left)
		}
	})

	// A Put that fails part way (its context ends after 20 MiB, past the
	// first part of an S3 upload) leaves nothing under its name, no
	// temporary file or key, and an older object of that name untouched.
	t.Run("CancelledPut", func(t *testing.T) {
		c := fresh(t)
		s := c.store
		cancelledPut := func(name string) {
			t.Helper()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			r := &cancelAfter{left: 20 << 20, cancel: cancel}
			if _, err := s.Put(ctx, name, r); !errors.Is(err, context.Canceled) {
				t.Fatalf("put with a context cancelled midway: %v, want context.Canceled", err)
			}
		}
		cancelledPut("e.rdb")
		if _, err := s.Stat(t.Context(), "e.rdb"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("stat: %v, want ErrNotFound", err)
		}
		if left := c.leftovers(t); len(left) != 0 {
			t.Fatalf("left behind: %v", left)
		}

		if _, err := s.Put(t.Context(), "e.rdb", strings.NewReader("old")); err != nil {
			t.Fatal(err)
		}
		before := c.leftovers(t)
		cancelledPut("e.rdb")
		checkObject(t, s, "e.rdb", []byte("old"))
		if after := c.leftovers(t); !slices.Equal(after, before) {
			t.Fatalf("after a cancelled replace: %v, want %v", after, before)
		}
	})

	// 40 MiB: several parts of an S3 upload, streamed from a reader that
	// never holds the content.
	t.Run("Large", func(t *testing.T) {
		ctx := t.Context()
		s := fresh(t).store
		const size = 40 << 20
		h := sha256.New()
		if _, err := io.Copy(h, randReader(size)); err != nil {
			t.Fatal(err)
		}
		want := hex.EncodeToString(h.Sum(nil))
		info, err := s.Put(ctx, "big/e.rdb", randReader(size))
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != size || info.SHA256 != want {
			t.Fatalf("put info %+v, want size %d sha256 %s", info, size, want)
		}
		r, got, err := s.Open(ctx, "big/e.rdb")
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		h.Reset()
		n, err := io.Copy(h, r)
		if err != nil {
			t.Fatal(err)
		}
		if n != size || hex.EncodeToString(h.Sum(nil)) != want || got.SHA256 != want || got.Size != size {
			t.Fatalf("read %d bytes, sha256 %x; open info %+v", n, h.Sum(nil), got)
		}
	})
}

// checkObject checks that Stat and Open of name agree with data.
func checkObject(t *testing.T, s Store, name string, data []byte) {
	t.Helper()
	st, err := s.Stat(t.Context(), name)
	if err != nil {
		t.Fatalf("stat %s: %v", name, err)
	}
	if st.Name != name || st.Size != int64(len(data)) || st.SHA256 != sum(data) || st.Modified.IsZero() {
		t.Fatalf("stat %s: %+v, want size %d sha256 %s", name, st, len(data), sum(data))
	}
	r, info, err := s.Open(t.Context(), name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer r.Close()
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	if !bytes.Equal(body, data) || info.Name != name || info.SHA256 != st.SHA256 || info.Size != st.Size {
		t.Fatalf("open %s: %d bytes %q…, info %+v; want %d bytes, info %+v", name, len(body), body[:min(len(body), 20)], info, len(data), st)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// randReader is n pseudo-random bytes, the same every time.
func randReader(n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{'g', 'r', 'a', 'n', 'a', 'r', 'y'}), n)
}

// cancelAfter supplies data; once left bytes have been read it cancels
// the Put's context and keeps supplying.
type cancelAfter struct {
	left   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.cancel()
	}
	p = p[:min(len(p), 64<<10)]
	clear(p)
	c.left -= len(p)
	return len(p), nil
}

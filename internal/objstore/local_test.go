package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLocalRoundTrip(t *testing.T) {
	ctx := t.Context()
	s, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("granary"), 10000)
	want := sha256.Sum256(data)
	info, err := s.Put(ctx, "t1/exports/e1.rdb", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) || info.SHA256 != hex.EncodeToString(want[:]) {
		t.Fatalf("put info %+v", info)
	}
	r, got, err := s.Open(ctx, "t1/exports/e1.rdb")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	body, _ := io.ReadAll(r)
	if !bytes.Equal(body, data) || got.SHA256 != info.SHA256 || got.Size != info.Size {
		t.Fatalf("open: %d bytes, info %+v", len(body), got)
	}
	if err := s.Delete(ctx, "t1/exports/e1.rdb"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "t1/exports/e1.rdb"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
	if err := s.Delete(ctx, "t1/exports/e1.rdb"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
}

func TestLocalBadNames(t *testing.T) {
	s, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "..", "../x", "a/../../x", "/abs", "a//b", "a/.", ".hidden", "x.sha256", strings.Repeat("a", 600)} {
		if _, err := s.Put(t.Context(), name, strings.NewReader("x")); err == nil {
			t.Errorf("put %q: no error", name)
		}
		if _, _, err := s.Open(t.Context(), name); err == nil {
			t.Errorf("open %q: no error", name)
		}
	}
}

// A Put that fails part way (here: its context ends) leaves nothing under
// the name and no temporary file.
func TestLocalPutIsAtomic(t *testing.T) {
	dir := t.TempDir()
	s, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelAfter{n: 3, cancel: cancel}
	if _, err := s.Put(ctx, "e.rdb", r); err == nil {
		t.Fatal("put with a cancelled context: no error")
	}
	if _, err := s.Stat(t.Context(), "e.rdb"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
}

type cancelAfter struct {
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n == 0 {
		c.cancel()
	}
	c.n--
	return copy(p, "chunk"), nil
}

func TestOpenSpec(t *testing.T) {
	dir := t.TempDir()
	for _, spec := range []string{"dir:" + dir, dir} {
		s, err := Open(spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if l, ok := s.(*Local); !ok || l.Dir() != dir {
			t.Fatalf("%s: %#v", spec, s)
		}
	}
	_, err := Open("s4://user:secret@host/bucket?key=secret")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("unknown spec: %v", err)
	}
	if _, err := Open(""); err == nil {
		t.Fatal("empty spec: no error")
	}
	_ = os.Remove(dir)
}

// TestLocalSweepsStaleTemps: opening a store removes the temporary files
// of Puts that a killed process left more than an hour ago, and keeps a
// recent one (a Put in flight) and every object.
func TestLocalSweepsStaleTemps(t *testing.T) {
	dir := t.TempDir()
	s, err := NewLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), "exports/acme/e1.rdb", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "exports", "acme")
	old, fresh := filepath.Join(sub, ".put-1"), filepath.Join(sub, ".put-2")
	for _, f := range []string{old, fresh} {
		if err := os.WriteFile(f, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(sub, "e1.rdb"), past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLocal(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale temp file: %v, want removed", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("recent temp file: %v, want kept", err)
	}
	if _, err := s.Stat(t.Context(), "exports/acme/e1.rdb"); err != nil {
		t.Fatalf("object: %v", err)
	}
}

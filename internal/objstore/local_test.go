package objstore

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestLocal(t *testing.T) {
	testStore(t, func(t *testing.T) storeCase {
		dir := t.TempDir()
		s, err := NewLocal(dir)
		if err != nil {
			t.Fatal(err)
		}
		return storeCase{store: s, leftovers: func(t *testing.T) []string { return filesUnder(t, dir) }}
	})
}

// filesUnder lists the files under dir (not the directories, which
// Delete leaves), sorted.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
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

package objstore

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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

// Package e2e holds whole-cluster tests: real redis-server children and the
// real granary binary, wired the way an operator would run them.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// granaryBin builds the granary binary once per test run.
func granaryBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "granary-e2e-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "granary")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/granary").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// startGranary runs `granary args…` in its own process group and kills the
// group at cleanup. Its output is printed if the test fails.
func startGranary(t *testing.T, args ...string) *procgroup.Proc {
	t.Helper()
	cmd := exec.Command(granaryBin(t), args...)
	out := &procgroup.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	p, err := procgroup.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("granary %v output:\n%s", args, out.String())
		}
	})
	return p
}

// metaStore starts a metadb and opens a store on it.
func metaStore(t *testing.T) (*redistest.Server, *metadb.Store) {
	t.Helper()
	meta := redistest.Start(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr, PoolSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return meta, store
}

func job(t *testing.T, s *metadb.Store, id string) *metadb.Job {
	t.Helper()
	j, err := s.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

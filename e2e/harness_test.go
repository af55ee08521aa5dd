// Package e2e holds whole-cluster tests: real redis-server children and the
// real granary binary, wired the way an operator would run them.
package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redisproc"
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
	p, _ := startGranaryOutput(t, args...)
	return p
}

// startGranaryListening runs `granary args… addrFlag 127.0.0.1:PORT` on a
// port found free and waits until it accepts connections there. A port
// found free can be taken by another test's server before granary binds it
// (the packages' tests run at once); granary then exits saying so, and
// another port is tried. It returns the process and its address.
func startGranaryListening(t *testing.T, addrFlag string, args ...string) (*procgroup.Proc, string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port, err := redisproc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p, out := startGranaryOutput(t, append(args, addrFlag, addr)...)
		up := false
		redistest.WaitFor(t, 20*time.Second, "granary "+args[0]+" listening on "+addr, func() bool {
			if p.Exited() != nil {
				return true
			}
			if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				nc.Close()
				up = true
			}
			return up
		})
		if up {
			return p, addr
		}
		if attempt < 5 && strings.Contains(out.String(), "address already in use") {
			continue
		}
		t.Fatalf("granary %s exited before it listened: %v\n%s", args[0], p.Exited(), out.String())
	}
}

// startGranaryOutput is startGranary, also returning what the process
// writes.
func startGranaryOutput(t *testing.T, args ...string) (*procgroup.Proc, *procgroup.Output) {
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
	return p, out
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

package procgroup_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
)

// TestStopEndsTheGroup: Stop ends the child and what the child started,
// and Exited reports the exit.
func TestStopEndsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	p, err := procgroup.Start(exec.Command("sh", "-c", "sleep 60 & echo $! > "+pidFile+"; wait"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	var grandchild int
	redistest.WaitFor(t, 5*time.Second, "the grandchild's pid", func() bool {
		b, err := os.ReadFile(pidFile)
		grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && grandchild > 0
	})
	if err := p.Exited(); err != nil {
		t.Fatalf("running child: Exited = %v, want nil", err)
	}
	p.Stop(5 * time.Second)
	if err := p.Exited(); err == nil {
		t.Fatal("stopped child: Exited = nil, want an error")
	}
	// The grandchild is not ours to reap: wait until it is gone or a
	// zombie (whether init reaps it is up to the machine).
	redistest.WaitFor(t, 5*time.Second, "the grandchild to exit", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(grandchild) + "/stat")
		if err != nil {
			return true
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		return len(f) > 0 && f[0] == "Z"
	})
}

// TestKillStopped: Kill ends a group stopped with SIGSTOP.
func TestKillStopped(t *testing.T) {
	p, err := procgroup.Start(exec.Command("sleep", "60"))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
}

// TestExitedQuotesLog: a logged child's early exit is reported with its
// status and the end of its log.
func TestExitedQuotesLog(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := procgroup.StartLogged(exec.Command("sh", "-c", "echo first; echo bind failed >&2; exit 3"), "child", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	<-p.Done()
	err = p.Exited()
	if err == nil {
		t.Fatal("Exited = nil after the child exited")
	}
	for _, want := range []string{"child exited", "exit status 3", "first", "bind failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Exited = %q, want it to contain %q", err, want)
		}
	}
}

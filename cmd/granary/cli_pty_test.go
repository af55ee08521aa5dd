package main

import (
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestMain lets a test run this binary as granary itself: with
// GRANARY_TEST_AS_CLI=1 it is the CLI, its arguments those of granary.
func TestMain(m *testing.M) {
	if os.Getenv("GRANARY_TEST_AS_CLI") == "1" {
		os.Exit(runCLI(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestWatchTerminal runs `granary job watch` in a pseudo-terminal against a
// scripted resize job: the bar goes through the steps with the bytes
// copied; Ctrl-C stops the watching (exit 130, with how to watch again)
// while the job, which the CLI never touched but to read it, goes on to
// done.
func TestWatchTerminal(t *testing.T) {
	isolate(t)
	const id = "j2-pty"
	done := jobInfo{ID: id, Kind: metadb.JobResize, State: metadb.JobDone, Step: metadb.StepDone, Progress: 1}
	// Two polls (about 400 ms) at each step; the job stays at its last step
	// until the test lets it finish.
	srv := &scriptedJob{script: resizeScript(id, 2), final: done}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	cmd := exec.Command(os.Args[0], "job", "watch", id, "--api", hs.URL, "--token", "t")
	cmd.Env = append(os.Environ(), "GRANARY_TEST_AS_CLI=1", "TERM=xterm")
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The Wait above reaps it; Kill of an ended process does nothing.
	t.Cleanup(func() { cmd.Process.Kill() })
	out := &procgroup.Output{}
	go io.Copy(out, tty)

	// The bar shows the copy with its bytes, then a later step.
	redistest.WaitFor(t, 20*time.Second, "the bar at copy, then at hold", func() bool {
		s := out.String()
		i := strings.Index(s, string(metadb.StepCopy))
		return i >= 0 && strings.Contains(s[i:], string(metadb.StepHold)) && strings.Contains(s, "/22.0 MB")
	})
	s := out.String()
	if !strings.Contains(s, string(metadb.StepReserve)) {
		t.Fatalf("the bar never showed step %s:\n%q", metadb.StepReserve, s)
	}
	// It advanced: several percentages, and the bar's frame.
	pct := map[string]bool{}
	for _, m := range regexp.MustCompile(`\b(\d+)%`).FindAllStringSubmatch(s, -1) {
		pct[m[1]] = true
	}
	if len(pct) < 3 || !strings.Contains(s, "|") || !strings.Contains(s, "\r") {
		t.Fatalf("no advancing bar on the terminal (percentages %v):\n%q", pct, s)
	}

	// Ctrl-C, typed on the terminal.
	if _, err := tty.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
			t.Fatalf("after Ctrl-C: %v, want exit %d\n%q", err, exitInterrupted, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still watching 10s after Ctrl-C:\n%q", out.String())
	}
	redistest.WaitFor(t, 5*time.Second, "the resume hint", func() bool {
		return strings.Contains(out.String(), "'granary job watch "+id+"' watches it again")
	})

	// The watcher only read the job; the job goes on to done.
	srv.mu.Lock()
	for _, r := range srv.requests {
		if r != "GET /v1/jobs/"+id {
			srv.mu.Unlock()
			t.Fatalf("the watcher sent %s", r)
		}
	}
	srv.mu.Unlock()
	srv.setFinish()
	code, lines, errs := run(t, "job", "watch", id, "--api", hs.URL, "--token", "t")
	if code != 0 || !strings.HasSuffix(lines, "step "+string(metadb.StepFreeOld)+" 85% 22.0 MB/22.0 MB\ndone\n") {
		t.Fatalf("the job after Ctrl-C: exit %d, %q %q; want its last steps, then done", code, lines, errs)
	}
}

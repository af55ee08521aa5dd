package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/granary-db/granary/e2e/resizeload"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// TestCLIWatchTerminal resizes a db holding 40 MB on `granary dev` with
// `granary db resize --watch` in a pseudo-terminal: the bar shows the
// resize's steps; Ctrl-C during the copy stops the watching (exit 130, with
// the line that watches again) and the API shows the job going on to done.
// The copy takes about a second, so the watcher nearly always sees it; an
// attempt whose job ended before Ctrl-C is retried (the other way round),
// at most three times.
func TestCLIWatchTerminal(t *testing.T) {
	_, c, dir := startDev(t)
	home := t.TempDir()
	created := call(t, "POST", c.API+"/v1/dbs", c.Demo.Token, map[string]string{"size": "64M"})
	if created.status != 201 || created.body["state"] != "active" {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	index := int(created.body["index"].(float64))
	rc := redis.NewClient(&redis.Options{Addr: c.Proxy, Username: c.Demo.User, Password: c.Demo.Password, DB: index})
	defer rc.Close()
	if _, err := resizeload.Fill(t.Context(), rc, 40<<20, 1000); err != nil {
		t.Fatal(err)
	}

	sizes := []string{"256M", "64M", "256M"}
	for attempt, size := range sizes {
		cmd := exec.Command(granaryBin(t), "db", "resize", fmt.Sprint(index), "--size", size, "--watch")
		cmd.Dir = home
		cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/config", "GRANARY_DEV_DIR=" + dir, "TERM=xterm", "PATH=/usr/bin:/bin"}
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 24, Cols: 120})
		if err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		out := &procgroup.Output{}
		go io.Copy(out, tty)
		// The Wait above reaps it; Kill of an ended process does nothing.
		stop := func() {
			cmd.Process.Kill()
			tty.Close()
		}
		t.Cleanup(stop)

		// Wait for two steps on the bar, one of them the copy with its
		// bytes, or for the end.
		var ended error
		endedEarly := false
		redistest.WaitFor(t, 60*time.Second, "the bar at two steps, the copy one of them", func() bool {
			select {
			case ended = <-exited:
				endedEarly = true
				return true
			default:
			}
			s := out.String()
			return strings.Contains(s, string(metadb.StepCopy)+" ") && strings.Contains(s, " MB/") && stepsShown(s) >= 2
		})
		if endedEarly {
			stop()
			if ended != nil {
				t.Fatalf("resize --watch: %v\n%q", ended, out.String())
			}
			t.Logf("attempt %d: the resize ended before the watcher saw two steps; again", attempt+1)
			continue
		}
		seen := out.String()
		if _, err := tty.Write([]byte{3}); err != nil { // Ctrl-C on the terminal
			t.Fatal(err)
		}
		var code int
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("still watching 10s after Ctrl-C:\n%q", out.String())
		}
		if code == 0 && attempt < len(sizes)-1 {
			stop()
			t.Logf("attempt %d: the resize ended just before Ctrl-C; again", attempt+1)
			continue
		}
		if code != 130 {
			t.Fatalf("after Ctrl-C: exit %d, want 130\n%q", code, out.String())
		}
		if strings.Count(seen, "%") < 3 {
			t.Fatalf("the bar did not move before Ctrl-C:\n%q", seen)
		}
		// What the CLI wrote last may still be in the terminal's buffer.
		redistest.WaitFor(t, 10*time.Second, "the resume hint", func() bool {
			return strings.Contains(out.String(), "' watches it again")
		})
		stop()
		all := out.String()
		if !strings.Contains(all, "|") || !strings.Contains(all, "stopped watching") {
			t.Fatalf("no bar or no resume hint:\n%q", all)
		}
		i := strings.Index(all, "granary job watch ")
		if i < 0 {
			t.Fatalf("no resume hint:\n%q", all)
		}
		id := strings.Fields(all[i+len("granary job watch "):])[0]
		id = strings.TrimRight(id, "'")
		// The job was not stopped: the API shows it going on to done.
		redistest.WaitFor(t, 60*time.Second, "the job done", func() bool {
			r := call(t, "GET", c.API+"/v1/jobs/"+id, c.Demo.Token, nil)
			var j struct{ State string }
			_ = json.Unmarshal(r.raw, &j)
			if j.State == metadb.JobFailed {
				t.Fatalf("job %s failed: %s", id, r.raw)
			}
			return j.State == metadb.JobDone
		})
		got := call(t, "GET", fmt.Sprintf("%s/v1/dbs/%d", c.API, index), c.Demo.Token, nil)
		if got.body["size"] != size || got.body["state"] != "active" {
			t.Fatalf("db after the resize: %s", got.raw)
		}
		return
	}
	t.Fatal("every resize ended before the watcher could be interrupted")
}

// stepsShown counts the resize steps a terminal's output shows.
func stepsShown(s string) int {
	n := 0
	for _, st := range metadb.Steps(metadb.JobResize) {
		if strings.Contains(s, string(st.Name)+" ") {
			n++
		}
	}
	return n
}

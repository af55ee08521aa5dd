package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
)

// startChild runs bin in a process group of its own, with env added to
// the harness's environment and its output in <dir>/<name>.log. Stopping
// it ends that group and nothing else: the harness never signals
// processes by name.
func startChild(dir, name, bin string, env []string, args ...string) (*procgroup.Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return procgroup.StartLogged(cmd, name, filepath.Join(dir, name+".log"))
}

// pin binds every thread of the processes to one CPU (taskset -a); threads
// they start later inherit it.
func pin(cpu int, pids ...int) error {
	if runtime.NumCPU() <= cpu {
		return fmt.Errorf("--pin needs CPU %d; this machine has %d", cpu, runtime.NumCPU())
	}
	for _, pid := range pids {
		out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(pid)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("taskset pid %d to CPU %d: %v: %s", pid, cpu, err, out)
		}
	}
	return nil
}

// cpuTicks is utime+stime of a process from /proc/<pid>/stat, in clock
// ticks (USER_HZ; see clockTick).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var u, st int64
	if _, err := fmt.Sscan(f[11], &u); err != nil {
		return 0, err
	}
	if _, err := fmt.Sscan(f[12], &st); err != nil {
		return 0, err
	}
	return u + st, nil
}

// clockTick is the length of one /proc clock tick, from `getconf CLK_TCK`.
func clockTick() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	hz := 100
	if err == nil {
		_, _ = fmt.Sscan(strings.TrimSpace(string(out)), &hz)
	}
	if hz <= 0 {
		hz = 100
	}
	return time.Second / time.Duration(hz)
}

// fatal marks an error that ends a poll at once (a child died).
type fatal struct{ error }

func (f fatal) Unwrap() error { return f.error }

// poll calls cond every 50ms until it returns nil, ctx ends or timeout
// passes; then it returns cond's last error. A fatal error ends it at once.
func poll(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var f fatal
		if errors.As(err, &f) {
			return fmt.Errorf("%s: %w", what, f.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %v: %w", what, timeout, err)
		case <-t.C:
		}
	}
}

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
	"syscall"
	"time"
)

// child is a process the harness started in its own process group, with
// its output in <dir>/<name>.log. stop ends the whole group and nothing
// else: the harness never signals processes by name.
type child struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(dir, name, bin string, env []string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

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

// exited reports an early exit as an error that quotes the end of the log.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", c.name, c.cmd.ProcessState, c.log, c.tail(15))
	default:
		return nil
	}
}

// stop sends SIGTERM to the child's process group, then SIGKILL after 3s.
func (c *child) stop() {
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.done
	}
}

func (c *child) tail(n int) string {
	b, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
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

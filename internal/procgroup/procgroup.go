// Package procgroup runs child processes each in a process group of its
// own and stops them by signalling that group, so whatever a child started
// goes with it and nothing else is ever signalled (no pkill, no names).
// redisproc, the e2e tests and the benchmark drivers start their children
// through it.
package procgroup

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a started child, the leader of its own process group.
type Proc struct {
	name string
	log  string // the file its output goes to, or ""
	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts cmd as the leader of a new process group. The child gets
// SIGKILL if the thread that started it exits (Pdeathsig), so a crashed
// parent leaves no server behind. cmd's output goes where the caller set
// it. The child is reaped in the background: Done is closed at its exit.
func Start(cmd *exec.Cmd) (*Proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{name: cmd.Path, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// StartLogged is Start with the child's stdout and stderr written to the
// file logPath (created or truncated). name is what Exited calls it.
func StartLogged(cmd *exec.Cmd, name, logPath string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	p, err := Start(cmd)
	// The child has its own copy of the descriptor.
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.name, p.log = name, logPath
	return p, nil
}

// Pid is the child's process id, which is also its process group's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the child's whole process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.Pid(), sig)
}

// Kill kills the process group with SIGKILL and waits for the child's
// exit. SIGCONT first, so that a group stopped with SIGSTOP dies at once.
func (p *Proc) Kill() {
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks the process group to exit (SIGTERM) and kills it if the child
// has not exited within the timeout. It returns once the child has exited.
func (p *Proc) Stop(timeout time.Duration) { p.StopWith(syscall.SIGTERM, timeout) }

// StopWith is Stop with another signal than SIGTERM (SIGINT, say).
func (p *Proc) StopWith(sig syscall.Signal, timeout time.Duration) {
	_ = p.Signal(syscall.SIGCONT)
	_ = p.Signal(sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.Kill()
	}
}

// Done is closed when the child has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited returns nil while the child runs; once it has exited, an error
// with its exit status and, for StartLogged children, the last lines of
// its log.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	if p.log == "" {
		return fmt.Errorf("%s exited (%v)", p.name, p.cmd.ProcessState)
	}
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.name, p.cmd.ProcessState, p.log, p.tail(15))
}

func (p *Proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// Output collects what a child writes to stdout and stderr (or a pty) so
// that a test can read it while the child runs: Write and String may be
// called from different goroutines.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String is everything written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

package proxy

import (
	"errors"
	"io"
	"net"
	"syscall"
	"unsafe"
)

// errWouldBlock: the socket has no data now; the caller returns from its
// step and is called again once the socket is readable.
var errWouldBlock = errors.New("would block")

// sockIn reads a connection. In raw mode it reads the socket itself, inside
// syscall.RawConn.Read: after a read that returned less than it asked for,
// the socket is known to be empty, so the next read waits for readability
// instead of spending a system call on EAGAIN, the way twemproxy does. At
// pipeline 1 that is one system call in three saved on every request.
//
// Go's poller is edge-triggered and remembers an edge that arrives while
// nobody waits; RawConn.Read forgets it only when it is entered. So a whole
// serving loop runs inside one RawConn.Read, and every entry reads before it
// waits.
//
// rawSyscalls: the reads and writes of tenant and shared backend sockets are
// raw system calls (syscall.RawSyscall), which do not tell the scheduler
// that the thread is in a system call. On non-blocking sockets they never
// block, and they are short; told about them, Go's sysmon takes the P away
// from any that spans its 20 µs tick, which at GOMAXPROCS=1 means handing
// the proxy to another thread and back, and keeps sysmon itself awake. On
// this 2-core machine that churn cost about 2 µs a request, more than the
// system calls saved by the drained-socket rule.
type sockIn struct {
	nc      net.Conn
	rc      syscall.RawConn // nil: plain blocking reads of nc
	fd      int
	drained bool // the last read emptied the socket
}

func newSockIn(nc net.Conn) *sockIn { return &sockIn{nc: nc} }

// useRaw switches to raw mode when the connection allows it.
func (s *sockIn) useRaw() { s.rc = rawConnOf(s.nc) }

// rawConnOf is nc's RawConn, or nil when it has none.
func rawConnOf(nc net.Conn) syscall.RawConn {
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// read reads into b. In raw mode it returns errWouldBlock when the socket
// has nothing (or is known to have nothing) to read; in plain mode it
// blocks.
func (s *sockIn) read(b []byte) (int, error) {
	if s.rc == nil {
		return s.nc.Read(b)
	}
	if s.drained {
		return 0, errWouldBlock
	}
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, e := rawRead(s.fd, b)
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			s.drained = true
			return 0, errWouldBlock
		case e != 0:
			return 0, e
		case n == 0:
			return 0, io.EOF
		}
		s.drained = n < len(b)
		return n, nil
	}
}

// sockOut writes a connection, with raw system calls when the connection
// allows it (see sockIn). Its callback is made once, so a write allocates
// nothing.
type sockOut struct {
	nc   net.Conn
	rc   syscall.RawConn // nil: plain writes of nc
	b    []byte          // what is left to write
	err  syscall.Errno
	nb   bool // tryWrite: do not wait for writability
	step func(fd uintptr) bool
}

func newSockOut(nc net.Conn) *sockOut {
	o := &sockOut{nc: nc, rc: rawConnOf(nc)}
	o.step = o.writeSome
	return o
}

// write writes all of b (or fails at the write deadline).
func (o *sockOut) write(b []byte) error {
	if o.rc == nil || len(b) == 0 {
		_, err := o.nc.Write(b)
		return err
	}
	o.b, o.err = b, 0
	err := o.rc.Write(o.step)
	o.b = nil
	if err == nil && o.err != 0 {
		err = o.err
	}
	return err
}

// writeSome writes until done, or returns false to wait until writable.
func (o *sockOut) writeSome(fd uintptr) bool {
	for len(o.b) > 0 {
		n, e := rawWrite(int(fd), o.b)
		switch e {
		case 0:
			o.b = o.b[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return o.nb
		default:
			o.err = e
			return true
		}
	}
	return true
}

// tryWrite writes what b it can without waiting and returns the rest; nil
// when the connection failed (its reader sees that too).
func (o *sockOut) tryWrite(b []byte) []byte {
	if o.rc == nil || len(b) == 0 {
		return b
	}
	o.b, o.err, o.nb = b, 0, true
	err := o.rc.Write(o.step)
	rest := o.b
	o.b, o.nb = nil, false
	if err != nil || o.err != 0 {
		return nil
	}
	return rest
}

// run calls step until it returns true. step returns false to wait until
// the socket is readable. The error is the poller's (a read deadline, the
// connection closed), nil when step ended.
func (s *sockIn) run(step func() bool) error {
	if s.rc == nil {
		for !step() {
		}
		return nil
	}
	return s.rc.Read(func(fd uintptr) bool {
		s.fd, s.drained = int(fd), false
		return step()
	})
}

// peerClosed reports whether the peer closed its side, without consuming
// input (a peek). Called from inside run; in plain mode it cannot tell and
// answers false.
func (s *sockIn) peerClosed() bool {
	return s.rc != nil && peekClosed(s.fd)
}

func peekClosed(fd int) bool {
	var buf [1]byte
	n, _, err := syscall.Recvfrom(fd, buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if err == syscall.EAGAIN || err == syscall.EINTR {
		return false
	}
	return err != nil || n == 0
}

// rawRead and rawWrite are read(2) and write(2) on a non-blocking socket,
// without entering the scheduler's system-call state (see sockIn).
func rawRead(fd int, b []byte) (int, syscall.Errno) {
	if raceEnabled {
		n, err := syscall.Read(fd, b)
		return n, errno(err)
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

func rawWrite(fd int, b []byte) (int, syscall.Errno) {
	if raceEnabled {
		n, err := syscall.Write(fd, b)
		return n, errno(err)
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(r), e
}

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	return err.(syscall.Errno)
}

// Command evloop is a throwaway forwarder, kept only to reproduce a
// measurement in docs/benchmarks.md ("A throwaway event loop"). It is not
// part of Granary and has none of its duties: no AUTH, no routing, no
// limits, no error handling worth the name.
//
// It is one goroutine on a locked thread (GOMAXPROCS=1) running its own
// epoll loop over the client sockets and one connection to a Redis server,
// the shape of twemproxy: in each pass of the loop it reads every readable
// client, finds the request boundaries, and sends all the requests it read
// to Redis in one write (with --defer, one pass later, as twemproxy does);
// replies are matched to clients in order and written back at the end of
// the pass.
//
//	go run ./e2e/benchproxy --serve          # prints the pair master's address
//	go run ./e2e/evloop --backend 127.0.0.1:<master port> [--defer]
//	redis-benchmark -p <printed port> -c 50 -P 1 -t get -n 200000
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"runtime"
	"syscall"
)

// keep holds the listener, the Redis connection and their files: the loop
// uses their descriptors only, and a collected *os.File closes its fd.
var keep []any

type client struct {
	fd     int
	in     []byte
	out    []byte
	dirty  bool
	closed bool // gone: its replies still owed by Redis are dropped
}

// skip returns the index just past the RESP value that starts at b[i], or
// -1 when b does not hold all of it yet.
func skip(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	j := i
	for j < len(b) && b[j] != '\n' {
		j++
	}
	if j >= len(b) || j-i < 2 {
		return -1
	}
	n, neg := 0, false
	for _, c := range b[i+1 : j-1] {
		if c == '-' {
			neg = true
			continue
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	switch b[i] {
	case '+', '-', ':':
		return j + 1
	case '$':
		if n < 0 {
			return j + 1
		}
		if j+1+n+2 > len(b) {
			return -1
		}
		return j + 1 + n + 2
	case '*':
		k := j + 1
		for x := 0; x < n; x++ {
			if k = skip(b, k); k < 0 {
				return -1
			}
		}
		return k
	}
	return -1
}

// writeAll writes b to the non-blocking fd, spinning while the socket is
// full (good enough on loopback for a benchmark).
func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		m, err := syscall.Write(fd, b)
		if err != nil && err != syscall.EAGAIN && err != syscall.EINTR {
			return err
		}
		if m > 0 {
			b = b[m:]
		}
	}
	return nil
}

// rawFD is a non-blocking duplicate of the descriptor behind c; the
// returned file must stay referenced, or its finalizer closes the fd.
func rawFD(c interface{ File() (*os.File, error) }) (int, *os.File) {
	f, err := c.File()
	if err != nil {
		log.Fatal(err)
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		log.Fatal(err)
	}
	return fd, f
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	backend := flag.String("backend", "", "the Redis server to forward to")
	deferWrite := flag.Bool("defer", false, "send to Redis one pass of the loop later, as twemproxy does")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()

	bc, err := net.Dial("tcp", *backend)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	bfd, bf := rawFD(bc.(*net.TCPConn))
	lfd, lf := rawFD(ln.(*net.TCPListener))
	keep = []any{bc, ln, bf, lf}
	fmt.Println(ln.Addr().String())

	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		log.Fatal(err)
	}
	for _, fd := range []int{lfd, bfd} {
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			log.Fatal(err)
		}
	}

	clients := map[int]*client{}
	var (
		fifo     []*client // whose reply Redis owes next, in order
		toRedis  []byte
		fromRed  []byte
		dirty    []*client
		deferred bool
	)
	evs := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for {
		timeout := -1
		if deferred {
			timeout = 0
		}
		n, err := syscall.EpollWait(ep, evs, timeout)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		for _, ev := range evs[:n] {
			fd := int(ev.Fd)
			switch fd {
			case lfd:
				for {
					nfd, _, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err == syscall.EAGAIN {
						break
					}
					if err != nil {
						log.Fatal(err) // level-triggered: it would come back forever
					}
					_ = syscall.SetsockoptInt(nfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					clients[nfd] = &client{fd: nfd}
					_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, nfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(nfd)})
				}
			case bfd:
				for {
					m, err := syscall.Read(bfd, buf)
					if m == 0 && err == nil {
						log.Fatal("redis closed the connection")
					}
					if err == syscall.EAGAIN || err == syscall.EINTR {
						break
					}
					if err != nil {
						log.Fatal(err)
					}
					fromRed = append(fromRed, buf[:m]...)
					if m < len(buf) {
						break
					}
				}
				p := 0
				for {
					e := skip(fromRed, p)
					if e < 0 {
						break
					}
					c := fifo[0]
					fifo = fifo[1:]
					if !c.closed {
						c.out = append(c.out, fromRed[p:e]...)
						if !c.dirty {
							c.dirty = true
							dirty = append(dirty, c)
						}
					}
					p = e
				}
				fromRed = append(fromRed[:0], fromRed[p:]...)
			default:
				c := clients[fd]
				if c == nil {
					continue
				}
				m, err := syscall.Read(fd, buf)
				if m < 0 && err == syscall.EAGAIN {
					continue
				}
				if m <= 0 {
					_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, fd, nil)
					_ = syscall.Close(fd)
					delete(clients, fd)
					c.closed = true
					continue
				}
				c.in = append(c.in, buf[:m]...)
				p := 0
				for {
					e := skip(c.in, p)
					if e < 0 {
						break
					}
					toRedis = append(toRedis, c.in[p:e]...)
					fifo = append(fifo, c)
					p = e
				}
				c.in = append(c.in[:0], c.in[p:]...)
			}
		}
		deferred = *deferWrite && len(toRedis) > 0 && !deferred
		if !deferred && len(toRedis) > 0 {
			if err := writeAll(bfd, toRedis); err != nil {
				log.Fatal(err)
			}
			toRedis = toRedis[:0]
		}
		for _, c := range dirty {
			if !c.closed {
				_ = writeAll(c.fd, c.out)
			}
			c.out, c.dirty = c.out[:0], false
		}
		dirty = dirty[:0]
	}
}

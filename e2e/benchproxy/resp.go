package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// respConn is a minimal RESP2 client: one command, one reply. The harness
// uses it for readiness probes and the naive-confirmation client, so that
// neither depends on a client library's handshake (HELLO, CLIENT SETINFO).
type respConn struct {
	nc net.Conn
	rd *bufio.Reader
	wb []byte
}

// errReply is an error reply (-ERR …) from the server.
type errReply string

func (e errReply) Error() string { return string(e) }

func dialRESP(ctx context.Context, addr string) (*respConn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &respConn{nc: nc, rd: bufio.NewReaderSize(nc, 16<<10)}, nil
}

func (c *respConn) Close() error { return c.nc.Close() }

// do sends one command and reads its reply: a string for simple, bulk and
// integer replies, nil for a null, []any for arrays, errReply for errors.
func (c *respConn) do(args ...string) (any, error) {
	c.wb = append(c.wb[:0], '*')
	c.wb = strconv.AppendInt(c.wb, int64(len(args)), 10)
	c.wb = append(c.wb, '\r', '\n')
	for _, a := range args {
		c.wb = append(c.wb, '$')
		c.wb = strconv.AppendInt(c.wb, int64(len(a)), 10)
		c.wb = append(c.wb, '\r', '\n')
		c.wb = append(c.wb, a...)
		c.wb = append(c.wb, '\r', '\n')
	}
	_ = c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write(c.wb); err != nil {
		return nil, err
	}
	v, err := c.read()
	if e, ok := v.(errReply); ok && err == nil {
		return nil, e
	}
	return v, err
}

// str runs a command whose reply is a string.
func (c *respConn) str(args ...string) (string, error) {
	v, err := c.do(args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: unexpected reply %v", args[0], v)
	}
	return s, nil
}

func (c *respConn) read() (any, error) {
	line, err := c.rd.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return errReply(line[1:]), nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.rd, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = c.read(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("bad reply line %q", line)
}

// infoField returns one "name:value" field of an INFO reply.
func infoField(info, name string) (string, bool) {
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return v, true
		}
	}
	return "", false
}

// infoInt is infoField parsed as an integer.
func infoInt(info, name string) (int64, error) {
	v, ok := infoField(info, name)
	if !ok {
		return 0, fmt.Errorf("INFO has no %s", name)
	}
	return strconv.ParseInt(v, 10, 64)
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// The --stop mode's fence check. A stopped (SIGSTOP) master that is
// resumed after the failover must refuse writes. Two writes try it, with
// the credentials the system's clients of that server use:
//
//   - queued: a client connects while the master is still stopped and
//     sends AUTH and SET at once; the kernel buffers them and they run when
//     the master resumes, before anything another process can send in
//     reaction to the resume (Granary's reclaim of the demoted master, say);
//   - resumed: a client connects after SIGCONT and writes.
//
// A write is "refused" on an error reply, "accepted" on OK. Under Granary
// the demoted master is reclaimed (emptied and given back to the spare
// pool) as soon as it answers; a resumed write that lands after that
// reclaim went to an empty spare, not to the old master's data set: it is
// counted as "after reclaim".

// Fence outcomes.
const (
	fenceRefused      = "refused"
	fenceAccepted     = "accepted"
	fenceAfterReclaim = "after reclaim"
)

// fenceTarget is a stopped old master and how to try it.
type fenceTarget struct {
	addr       string
	user, pass string // "" user: the default user without a password
	resume     func() error
	// reclaims: the system lifts the fence (min-replicas-to-write back to
	// 0) when it empties the old master (Granary); the resumed write's
	// pipeline then reads the fence too.
	reclaims bool
}

// checkFence resumes t's master and returns the outcomes of the queued and
// the resumed write.
func checkFence(ctx context.Context, t fenceTarget, round int) (queued, resumed string, err error) {
	qkey := fmt.Sprintf("fence:queued:%d", round)
	c, err := net.DialTimeout("tcp", t.addr, time.Second)
	if err != nil {
		return "", "", fmt.Errorf("connect to the stopped old master: %w", err)
	}
	defer c.Close()
	var b []byte
	n := 1
	if t.user != "" {
		b = appendCmd(b, "AUTH", t.user, t.pass)
		n++
	}
	b = appendCmd(b, "SET", qkey, "1")
	if _, err := c.Write(b); err != nil {
		return "", "", err
	}
	if err := t.resume(); err != nil {
		return "", "", fmt.Errorf("SIGCONT: %w", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(c)
	var last string
	for i := 0; i < n; i++ {
		if last, err = rd.ReadString('\n'); err != nil {
			return "", "", fmt.Errorf("queued write's replies: %w", err)
		}
	}
	queued = fenceRefused
	if strings.HasPrefix(last, "+OK") {
		queued = fenceAccepted
	}

	// The resumed write, and, when the system reclaims old masters, a
	// look at the fence on the same connection in the same pipeline:
	// Redis runs a pipeline's commands without another client's in
	// between, and Granary's reclaim lifts the fence and empties the
	// server in one pipeline too, so a write accepted with the fence
	// already lifted landed on the emptied server.
	rc, err := net.DialTimeout("tcp", t.addr, time.Second)
	if err != nil {
		return "", "", fmt.Errorf("connect to the resumed old master: %w", err)
	}
	defer rc.Close()
	b = b[:0]
	if t.user != "" {
		b = appendCmd(b, "AUTH", t.user, t.pass)
	}
	b = appendCmd(b, "SET", fmt.Sprintf("fence:resumed:%d", round), "1")
	if t.reclaims {
		b = appendCmd(b, "AUTH", "default", "x") // nopass: any password
		b = appendCmd(b, "CONFIG", "GET", "min-replicas-to-write")
	}
	if _, err := rc.Write(b); err != nil {
		return "", "", err
	}
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd = bufio.NewReader(rc)
	line := func() string {
		if err == nil {
			var l string
			l, err = rd.ReadString('\n')
			return strings.TrimSpace(l)
		}
		return ""
	}
	if t.user != "" {
		line()
	}
	set := line()
	fence := ""
	if t.reclaims {
		line()         // AUTH
		line()         // *2
		line()         // $21
		line()         // min-replicas-to-write
		line()         // $1
		fence = line() // the value
	}
	if err != nil {
		return "", "", fmt.Errorf("resumed write's replies: %w", err)
	}
	switch {
	case !strings.HasPrefix(set, "+OK"):
		resumed = fenceRefused
	case t.reclaims && fence == "0":
		resumed = fenceAfterReclaim
	default:
		resumed = fenceAccepted
	}
	return queued, resumed, nil
}

// appendCmd appends a RESP command.
func appendCmd(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

package proxy

import (
	"context"
	"fmt"
	"net"
	"time"
)

// dconn is a dedicated backend connection: one client uses it alone, in
// request/reply lockstep, for MULTI/EXEC with WATCH, blocking commands and
// subscriptions. Idle ones are kept in their group for reuse.
type dconn struct {
	g        *group
	nc       net.Conn
	rr       *replyReader
	clientID int64
	wbuf     []byte
	broken   bool
}

// dedicated takes an idle dedicated connection of the group or dials one.
func (g *group) dedicated(ctx context.Context) (*dconn, error) {
	g.mu.Lock()
	if n := len(g.idle); n > 0 {
		d := g.idle[n-1]
		g.idle = g.idle[:n-1]
		g.mu.Unlock()
		return d, nil
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, g.p.cfg.DialTimeout+g.p.cfg.BackendTimeout)
	defer cancel()
	h, err := g.p.dialBackend(ctx, g.addr, g.db, g.user)
	if err != nil {
		g.p.metrics.backendErrors.WithLabelValues(g.addr, "dial").Inc()
		return nil, err
	}
	return &dconn{g: g, nc: h.nc, rr: h.rr, clientID: h.clientID}, nil
}

// release returns d to its group if it is in a clean state, else closes it.
func (d *dconn) release() {
	if d.broken || d.rr.buffered() || d.g.p.closing.Load() {
		d.nc.Close()
		return
	}
	d.g.mu.Lock()
	if len(d.g.idle) < 16 {
		d.g.idle = append(d.g.idle, d)
		d.g.mu.Unlock()
		return
	}
	d.g.mu.Unlock()
	d.nc.Close()
}

func (d *dconn) close() {
	d.broken = true
	d.nc.Close()
}

// do sends raw (one or more commands) and returns n raw replies, each
// copied. It blocks up to timeout (0: the backend timeout).
func (d *dconn) do(raw []byte, n int, timeout time.Duration) ([][]byte, error) {
	if timeout == 0 {
		timeout = d.g.p.cfg.BackendTimeout
	}
	_ = d.nc.SetDeadline(time.Now().Add(timeout))
	if _, err := d.nc.Write(raw); err != nil {
		d.close()
		return nil, fmt.Errorf("%w: %s: %v", ErrBackend, d.g.addr, err)
	}
	out := make([][]byte, 0, n)
	for i := 0; i < n; i++ {
		r, err := d.rr.next()
		if err != nil {
			d.close()
			return nil, fmt.Errorf("%w: %s: %v", ErrBackend, d.g.addr, err)
		}
		out = append(out, append([]byte(nil), r...))
	}
	return out, nil
}

// await waits for one reply with no overall deadline (a blocking command),
// checking every tick that the tenant is still connected and the proxy still
// running; stop says why it gave up.
func (d *dconn) await(tick time.Duration, alive func() bool) ([]byte, error) {
	for {
		_ = d.nc.SetReadDeadline(time.Now().Add(tick))
		r, err := d.rr.next()
		if err == nil {
			_ = d.nc.SetReadDeadline(time.Time{})
			return append([]byte(nil), r...), nil
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() && alive() {
			continue
		}
		d.close()
		return nil, fmt.Errorf("%w: %s: %v", ErrBackend, d.g.addr, err)
	}
}

package e2e

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestPairFailoverHungMaster stops the pair's master with SIGSTOP while
// four clients do confirmed writes through the proxy: its connections stay
// open and its replica's link reads "up", yet the keeper fails it over on
// the proxy's stall report, within the target, and no acknowledged write
// is lost. Resumed, the old master refuses writes with the proxy's backend
// credentials: one queued while it was stopped, and one sent after SIGCONT
// (unless Granary's reclaim had already lifted the fence and emptied it).
func TestPairFailoverHungMaster(t *testing.T) {
	c := startPairCluster(t, 1)
	w := c.startWriters(4)
	before := c.waitWatched()
	if err := w.Flowing(t.Context(), 10*time.Second); err != nil {
		t.Fatalf("writes not flowing before the stop: %v", err)
	}
	old := c.servers[before.Master]
	t.Cleanup(func() { _ = old.Signal(syscall.SIGCONT) })
	stopAt := w.MarkKill()
	if err := old.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "failover and a new replica", func() bool {
		p := c.pair()
		return p.Master == before.Replica && p.Replica != "" && p.State == metadb.PairActive && !w.Back().IsZero()
	})
	took := w.Back().Sub(stopAt)
	t.Logf("master stopped: writes unavailable for %v (%s)", took.Round(time.Millisecond), c.replaceTimeline(stopAt))
	if took > 4*time.Second {
		t.Fatalf("writes unavailable for %v after a hung master, want well under 4s (target 2s)", took)
	}

	// The proxies' backend credentials: their tenant user on every master
	// (no backend password: "granary").
	queued := rawConn(t, before.Master)
	send(t, queued, []string{"AUTH", "granary-tenant", "granary"}, []string{"SET", "queued", "1"})
	if err := old.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if r := replies(t, queued, 2); r[0] != "+OK" || !strings.HasPrefix(r[1], "-NOREPLICAS") {
		t.Fatalf("write queued while the old master was stopped: %q, want it refused with NOREPLICAS", r)
	}
	// After SIGCONT: the fence is read in the same pipeline, which Redis
	// runs without another client's command in between, as the reclaim's
	// unfence and FLUSHALL.
	resumed := rawConn(t, before.Master)
	send(t, resumed, []string{"AUTH", "granary-tenant", "granary"}, []string{"SET", "resumed", "1"},
		[]string{"AUTH", "default", "x"}, []string{"CONFIG", "GET", "min-replicas-to-write"})
	r := replies(t, resumed, 8)
	switch {
	case strings.HasPrefix(r[1], "-NOREPLICAS"):
	case r[1] == "+OK" && r[7] == "0":
		t.Logf("the write after SIGCONT came after the reclaim (fence lifted, server emptied)")
	default:
		t.Fatalf("write to the resumed old master: %q", r)
	}

	n := w.Count()
	redistest.WaitFor(t, 10*time.Second, "writes on the new pair", func() bool { return w.Count() >= n+100 })
	total, acked := w.Halt()
	if lost := c.lost(acked); lost != 0 {
		t.Fatalf("%d of %d acknowledged writes lost", lost, total)
	}
}

func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// send writes the commands in one write, as a pipeline.
func send(t *testing.T, nc net.Conn, cmds ...[]string) {
	t.Helper()
	var b []byte
	for _, cmd := range cmds {
		b = append(b, '*')
		b = strconv.AppendInt(b, int64(len(cmd)), 10)
		b = append(b, "\r\n"...)
		for _, a := range cmd {
			b = append(b, '$')
			b = strconv.AppendInt(b, int64(len(a)), 10)
			b = append(b, "\r\n"...)
			b = append(b, a...)
			b = append(b, "\r\n"...)
		}
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
}

// replies reads n reply lines (an array's header and elements are lines
// of their own).
func replies(t *testing.T, nc net.Conn, n int) []string {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rd := bufio.NewReader(nc)
	out := make([]string, n)
	for i := range out {
		l, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reply %d: %v (so far %q)", i, err, out[:i])
		}
		out[i] = strings.TrimSpace(l)
	}
	return out
}

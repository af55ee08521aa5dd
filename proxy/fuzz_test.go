package proxy

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// readCounter is a counter's current value.
func readCounter(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// FuzzRequestPath sends arbitrary bytes, as an authenticated tenant, through
// a live proxy to real Redis servers: whatever comes in, the proxy must not
// panic, must keep serving, and another tenant's data must stay as it was.
//
//	go test ./proxy/ -run '^$' -fuzz FuzzRequestPath -fuzztime 60s
func FuzzRequestPath(f *testing.F) {
	e := newEnv(f)
	pass := e.tenant("fuzz")
	victimPass := e.tenant("victim")
	e.db("fuzz", metadb.WriteAsync)
	vdb := e.db("victim", metadb.WriteAsync)
	if err := e.client("victim", victimPass, vdb.Index).Set(e.ctx, "secret", "intact", 0).Err(); err != nil {
		f.Fatal(err)
	}
	slot := e.slot(vdb)
	auth := string(appendCommandStr(nil, "AUTH", "fuzz", pass))
	for _, seed := range []string{
		"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", "SET k v\r\nGET k\r\n", "*3\r\n$6\r\nSELECT\r\n$1\r\n1\r\n",
		"MULTI\r\nSET a 1\r\nEXEC\r\n", "WATCH a\r\nMULTI\r\nINCR a\r\nEXEC\r\n", "SUBSCRIBE c\r\nPING\r\nGET x\r\n",
		"EVAL \"return redis.call('select', 2)\" 0\r\n", "FLUSHALL\r\n", "MOVE k 1\r\n", "*1\r\n$-5\r\n",
		"BLPOP q 1\r\n", "HELLO 2 AUTH victim x\r\n", "PSUBSCRIBE *\r\nPUNSUBSCRIBE\r\nSET k v\r\n", "CLIENT SETNAME x\r\nINFO\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		nc, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := nc.Write(append([]byte(auth), in...)); err != nil {
			return
		}
		_ = nc.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, nc)
		nc.Close()
		if n := readCounter(e.p.metrics.panics); n != 0 {
			t.Fatalf("the proxy recovered %v panics", n)
		}
		if got := slot.Get(e.ctx, "secret").Val(); got != "intact" {
			t.Fatalf("victim's data changed: %q", got)
		}
	})
	// Still serving after all of it.
	if err := e.client("fuzz", pass, 0).Ping(e.ctx).Err(); err != nil {
		f.Fatal(err)
	}
}

package keeper

import (
	"io"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

// TestProxySeesMaster checks the proxies' vote in a failover: a live proxy
// that got a reply from the master after the keeper saw it go down vetoes
// the failover; replies from before, other servers, or lapsed proxies do not.
func TestProxySeesMaster(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	k, err := New(Config{ID: "k1"}, e.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	master := e.master.Addr
	tests := []struct {
		name  string
		ok    map[string]time.Time
		lease time.Duration
		want  string
	}{
		{"reply after the keeper lost it", map[string]time.Time{master: down.Add(300 * time.Millisecond)}, time.Minute, "px"},
		{"last reply before", map[string]time.Time{master: down.Add(-300 * time.Millisecond)}, time.Minute, ""},
		{"replies from another server only", map[string]time.Time{e.replica.Addr: down.Add(time.Second)}, time.Minute, ""},
		{"no report", nil, time.Minute, ""},
		{"proxy lease lapsed", map[string]time.Time{master: down.Add(time.Second)}, time.Millisecond, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px", BackendOK: tc.ok}, tc.lease); err != nil {
				t.Fatal(err)
			}
			if tc.lease < time.Second {
				redistest.WaitFor(t, 5*time.Second, "lease to lapse", func() bool {
					ms, _ := e.store.LiveMembers(ctx, metadb.KindProxy)
					return len(ms) == 0
				})
			}
			if got := k.proxySeesMaster(ctx, master, down); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

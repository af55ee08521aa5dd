package keeper

import (
	"io"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

// TestProxiesOnMaster checks the proxies' view of a master the keeper
// cannot reach: a live proxy that got a reply from it after the keeper saw
// it go down vetoes the failover; replies from before, other servers, or
// lapsed proxies do not. A stall report made after the keeper's last good
// probe, of a wait of at least proxyStallMin, is a witness; older reports
// and shorter waits are not.
func TestProxiesOnMaster(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	k, err := New(Config{ID: "k1"}, e.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	master := e.master.Addr
	h := metadb.NodeHealth{Addr: master, Since: now, LastOK: now.Add(-300 * time.Millisecond)}
	tests := []struct {
		name    string
		ok      map[string]time.Time
		stalled map[string]time.Time
		lease   time.Duration
		want    proxyView
	}{
		{"reply after the keeper lost it", map[string]time.Time{master: now.Add(300 * time.Millisecond)}, nil, time.Minute, proxyView{sees: "px"}},
		{"last reply before", map[string]time.Time{master: now.Add(-300 * time.Millisecond)}, nil, time.Minute, proxyView{}},
		{"replies from another server only", map[string]time.Time{e.replica.Addr: now.Add(time.Second)}, nil, time.Minute, proxyView{}},
		{"no report", nil, nil, time.Minute, proxyView{}},
		{"proxy lease lapsed", map[string]time.Time{master: now.Add(time.Second)}, nil, time.Millisecond, proxyView{}},
		{"stalled long enough", nil, map[string]time.Time{master: now.Add(-time.Second)}, time.Minute, proxyView{stalled: "px"}},
		{"stalled, too short", nil, map[string]time.Time{master: now.Add(-time.Millisecond)}, time.Minute, proxyView{}},
		{"another server stalled", nil, map[string]time.Time{e.replica.Addr: now.Add(-time.Second)}, time.Minute, proxyView{}},
		{"stalled, lease lapsed", nil, map[string]time.Time{master: now.Add(-time.Second)}, time.Millisecond, proxyView{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := e.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px", BackendOK: tc.ok, BackendStalled: tc.stalled}, tc.lease); err != nil {
				t.Fatal(err)
			}
			if tc.lease < time.Second {
				redistest.WaitFor(t, 5*time.Second, "lease to lapse", func() bool {
					ms, _ := e.store.LiveMembers(ctx, metadb.KindProxy)
					return len(ms) == 0
				})
			}
			if got := k.proxiesOn(ctx, master, h); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// A report made before the keeper's last good probe says nothing of
	// the master's state since.
	if err := e.store.Heartbeat(ctx, metadb.KindProxy, metadb.Member{ID: "px", BackendStalled: map[string]time.Time{master: now.Add(-time.Minute)}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	late := h
	late.LastOK = time.Now().Add(time.Second)
	if got := k.proxiesOn(ctx, master, late); got != (proxyView{}) {
		t.Fatalf("stall reported before the last good probe: got %+v, want none", got)
	}
}

package metadb

import (
	"fmt"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
)

func memberIDs(ms []*Member) string {
	out := ""
	for _, m := range ms {
		out += fmt.Sprintf("%s(live=%v) ", m.ID, m.Live)
	}
	return out
}

func TestMembers(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	const short = 150 * time.Millisecond

	if err := s.Heartbeat(ctx, KindProxy, Member{}, time.Minute); err == nil {
		t.Errorf("Heartbeat without an id: got nil error, want a refusal")
	}
	beats := []struct {
		kind Kind
		m    Member
		ttl  time.Duration
	}{
		{KindProxy, Member{ID: "px1", Addr: "127.0.0.1:7001", AppliedVersion: 7, Conns: 3, DBs: 2}, time.Minute},
		{KindProxy, Member{ID: "px2", Addr: "127.0.0.1:7002"}, short},
		{KindKeeper, Member{ID: "k1", Addr: "127.0.0.1:7101"}, time.Minute},
	}
	for _, b := range beats {
		if err := s.Heartbeat(ctx, b.kind, b.m, b.ttl); err != nil {
			t.Fatalf("Heartbeat %s: %v", b.m.ID, err)
		}
	}

	live, err := s.LiveMembers(ctx, KindProxy)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := memberIDs(live), "px1(live=true) px2(live=true) "; got != want {
		t.Errorf("live proxies: got %s, want %s", got, want)
	}
	if p := live[0]; p.Addr != "127.0.0.1:7001" || p.AppliedVersion != 7 || p.Conns != 3 || p.DBs != 2 || time.Until(p.LeaseExpires) < 30*time.Second {
		t.Errorf("px1 report: got %+v, want addr 127.0.0.1:7001 version 7 conns 3 dbs 2 and a lease about a minute away", p)
	}
	keepers, err := s.LiveMembers(ctx, KindKeeper)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := memberIDs(keepers), "k1(live=true) "; got != want {
		t.Errorf("live keepers: got %s, want %s", got, want)
	}

	redistest.WaitFor(t, 5*time.Second, "px2's lease to lapse", func() bool {
		live, err := s.LiveMembers(ctx, KindProxy)
		return err == nil && memberIDs(live) == "px1(live=true) "
	})
	tests := []struct {
		name   string
		forget time.Duration
		want   string
	}{
		{name: "lapsed member remembered", forget: time.Hour, want: "px1(live=true) px2(live=false) "},
		{name: "lapsed member forgotten", forget: 0, want: "px1(live=true) "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := s.Members(ctx, KindProxy, tc.forget)
			if err != nil {
				t.Fatal(err)
			}
			if got := memberIDs(ms); got != tc.want {
				t.Errorf("Members(forget %v): got %s, want %s", tc.forget, got, tc.want)
			}
		})
	}

	// A heartbeat brings a lapsed member back; Deregister removes one at once.
	if err := s.Heartbeat(ctx, KindProxy, Member{ID: "px2"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, KindProxy, "px1"); err != nil {
		t.Fatal(err)
	}
	ms, err := s.Members(ctx, KindProxy, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := memberIDs(ms), "px2(live=true) "; got != want {
		t.Errorf("proxies after renew and deregister: got %s, want %s", got, want)
	}
	if keepers, _ := s.LiveMembers(ctx, KindKeeper); memberIDs(keepers) != "k1(live=true) " {
		t.Errorf("keepers after a proxy deregistered: got %s, want k1(live=true)", memberIDs(keepers))
	}
}

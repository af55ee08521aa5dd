package metadb

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/proto/buspb"
)

func TestLeaderLease(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	const ttl = 200 * time.Millisecond

	for _, id := range []string{"", "a/b"} {
		if _, _, err := s.AcquireLeader(ctx, id, ttl); err == nil {
			t.Errorf("AcquireLeader(%q): got nil error, want a refusal", id)
		}
	}

	fa, ok, err := s.AcquireLeader(ctx, "A", ttl)
	if err != nil || !ok || fa == nil || fa.ID != "A" || fa.Token <= 0 {
		t.Fatalf("A acquires: got %+v, %v, %v, want a fence, true, nil", fa, ok, err)
	}
	if f, ok, err := s.AcquireLeader(ctx, "B", ttl); err != nil || ok || f != nil {
		t.Fatalf("B while A leads: got %+v, %v, %v, want nil, false, nil", f, ok, err)
	}
	if got, _ := s.Leader(ctx); got != "A" {
		t.Errorf("Leader: got %q, want %q", got, "A")
	}
	renewed, ok, err := s.AcquireLeader(ctx, "A", ttl)
	if err != nil || !ok || renewed.Token != fa.Token {
		t.Fatalf("A renews: got %+v, %v, %v, want token %d", renewed, ok, err, fa.Token)
	}

	redistest.WaitFor(t, 5*time.Second, "A's lease to lapse", func() bool {
		l, err := s.Leader(ctx)
		return err == nil && l == ""
	})
	fb, ok, err := s.AcquireLeader(ctx, "B", time.Minute)
	if err != nil || !ok {
		t.Fatalf("B after the lapse: got %v, %v, want true, nil", ok, err)
	}
	if fb.Token <= fa.Token {
		t.Errorf("B's token: got %d, want more than A's %d", fb.Token, fa.Token)
	}
	if f, ok, err := s.AcquireLeader(ctx, "A", ttl); err != nil || ok || f != nil {
		t.Errorf("A renews after being deposed: got %+v, %v, %v, want nil, false, nil", f, ok, err)
	}

	// A clean handover: B releases, A takes over at once with a new token
	// and B's old fence is worthless.
	if err := s.ReleaseLeader(ctx, fa); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Leader(ctx); got != "B" {
		t.Errorf("a stale fence released the lease: leader got %q, want %q", got, "B")
	}
	if err := s.ReleaseLeader(ctx, fb); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Leader(ctx); got != "" {
		t.Errorf("leader after release: got %q, want none", got)
	}
	fa2, ok, err := s.AcquireLeader(ctx, "A", time.Minute)
	if err != nil || !ok || fa2.Token <= fb.Token {
		t.Fatalf("A after B released: got %+v, %v, %v, want a token above %d", fa2, ok, err, fb.Token)
	}
	if _, err := s.Announce(ctx, fb, "B"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("write with B's released fence: got %v, want %v", err, ErrNotLeader)
	}
	if _, err := s.Announce(ctx, fa2, "A"); err != nil {
		t.Errorf("write with A's new fence: got %v, want nil", err)
	}
}

// TestStaleFence: every fenced write of a deposed leader is refused with
// ErrNotLeader and changes nothing in metadb, both while nobody leads and
// once another master does; the new leader's same writes go through.
func TestStaleFence(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 4)
	mustTenant(t, s, "acme")
	db := mustActiveDB(t, s, "acme", pair, "create0")
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop0"); err != nil {
		t.Fatal(err)
	}
	other := mustActiveDB(t, s, "acme", pair, "create1")

	fa, ok, err := s.AcquireLeader(ctx, "A", 150*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("A acquires: got %v, %v", ok, err)
	}
	redistest.WaitFor(t, 5*time.Second, "A's lease to lapse", func() bool {
		l, err := s.Leader(ctx)
		return err == nil && l == ""
	})

	called := false
	writes := []struct {
		name  string
		write func(f *Fence) error
	}{
		{"UpdateJob", func(f *Fence) error {
			_, err := s.UpdateJob(ctx, f, "create1", func(j *Job) error { called = true; j.Step = "hijacked"; return nil })
			return err
		}},
		{"UpdateDB", func(f *Fence) error {
			_, err := s.UpdateDB(ctx, f, f.ID, "acme", other.Index, func(d *DB) ([]*buspb.Envelope, error) {
				called = true
				d.Banned = true
				return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{Tenant: "acme", Index: uint32(other.Index), Banned: true}}}}, nil
			})
			return err
		}},
		{"UpdatePair", func(f *Fence) error {
			_, err := s.UpdatePair(ctx, f, pair.ID, func(p *Pair) error { called = true; p.Keeper = "k9"; return nil })
			return err
		}},
		{"Announce", func(f *Fence) error {
			_, err := s.Announce(ctx, f, f.ID, &buspb.Envelope{})
			return err
		}},
		{"ReleaseSlot", func(f *Fence) error { return s.ReleaseSlot(ctx, f, "drop0") }},
	}

	check := func(t *testing.T) {
		before := dump(t, s)
		for _, tc := range writes {
			t.Run(tc.name, func(t *testing.T) {
				called = false
				if err := tc.write(fa); !errors.Is(err, ErrNotLeader) {
					t.Fatalf("write with a stale fence: got %v, want %v", err, ErrNotLeader)
				}
				if called {
					t.Errorf("the change function ran for a stale fence")
				}
			})
		}
		if after := dump(t, s); after != before {
			t.Errorf("stale writes changed metadb:\n got %s\nwant %s", after, before)
		}
	}
	t.Run("nobody leads", check)

	fb, ok, err := s.AcquireLeader(ctx, "B", time.Minute)
	if err != nil || !ok {
		t.Fatalf("B acquires: got %v, %v", ok, err)
	}
	t.Run("B leads", check)

	t.Run("new leader writes", func(t *testing.T) {
		for _, tc := range writes {
			if err := tc.write(fb); err != nil {
				t.Errorf("%s with the leader's fence: got %v, want nil", tc.name, err)
			}
		}
		if _, err := s.DB(ctx, "acme", db.Index); !errors.Is(err, ErrNotFound) {
			t.Errorf("dropped db after the leader's release: got %v, want %v", err, ErrNotFound)
		}
		free, _ := s.FreeSlots(ctx, pair.ID)
		if !slices.Contains(free, db.SlotDB) {
			t.Errorf("free slots after the leader's release: got %v, want %d among them", free, db.SlotDB)
		}
		if j, _ := s.Job(ctx, "create1"); j == nil || j.Step != "hijacked" {
			t.Errorf("job after the leader's update: got %+v, want step hijacked", j)
		}
		if d, _ := s.DB(ctx, "acme", other.Index); d == nil || !d.Banned {
			t.Errorf("db after the leader's update: got %+v, want banned", d)
		}
	})
}

// dump renders every metadb key with its value, for before/after checks.
func dump(t *testing.T, s *Store) string {
	t.Helper()
	ctx := t.Context()
	c := s.Client()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	out := ""
	for _, k := range keys {
		typ := c.Type(ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = c.Get(ctx, k).Val()
		case "hash":
			v = c.HGetAll(ctx, k).Val()
		case "set":
			m := c.SMembers(ctx, k).Val()
			sort.Strings(m)
			v = m
		case "zset":
			v = c.ZRangeWithScores(ctx, k, 0, -1).Val()
		}
		out += k + "=" + typ + ":" + fmt.Sprint(v) + "\n"
	}
	return out
}

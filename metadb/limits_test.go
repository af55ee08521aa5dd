package metadb

import (
	"context"
	"errors"
	"testing"

	"github.com/granary-db/granary/proto/buspb"
)

func TestSetLimits(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	if _, err := s.CreateTenant(ctx, "api", "acme", "token-1", "password-1"); err != nil {
		t.Fatal(err)
	}
	got := make(chan *buspb.Envelope, 16)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- s.Subscribe(sctx, Subscriber{
			Handle: func(_ context.Context, env *buspb.Envelope) { got <- env },
			Resync: func(context.Context) (uint64, error) {
				select {
				case <-ready:
				default:
					close(ready)
				}
				return s.Version(ctx)
			},
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-ready

	tests := []struct {
		name string
		l    Limits
		err  error
	}{
		{name: "both", l: Limits{MaxConnections: 10, OpsPerSec: 500}},
		{name: "defaults", l: Limits{}},
		{name: "negative connections", l: Limits{MaxConnections: -1}, err: ErrBadLimits},
		{name: "negative ops", l: Limits{OpsPerSec: -5}, err: ErrBadLimits},
		{name: "absurd connections", l: Limits{MaxConnections: MaxMaxConnections + 1}, err: ErrBadLimits},
		{name: "absurd ops", l: Limits{OpsPerSec: MaxOpsPerSec + 1}, err: ErrBadLimits},
		{name: "largest", l: Limits{MaxConnections: MaxMaxConnections, OpsPerSec: MaxOpsPerSec}},
	}
	want := Limits{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := s.Version(ctx)
			tn, err := s.SetLimits(ctx, "api", "acme", tc.l)
			if !errors.Is(err, tc.err) {
				t.Fatalf("SetLimits: got %v, want %v", err, tc.err)
			}
			after, _ := s.Version(ctx)
			if tc.err != nil {
				if after != before {
					t.Errorf("version moved on a refused change: %d -> %d", before, after)
				}
			} else {
				want = tc.l
				if tn.Limits != tc.l || after != before+1 {
					t.Errorf("got limits %+v version %d, want %+v version %d", tn.Limits, after, tc.l, before+1)
				}
				env := <-got
				m := env.GetTenantLimits()
				if m == nil || m.Tenant != "acme" || m.MaxConnections != tc.l.MaxConnections || m.OpsPerSec != tc.l.OpsPerSec || env.Version != after {
					t.Errorf("message: got %v, want the limits at version %d", env, after)
				}
			}
			stored, err := s.Tenant(ctx, "acme")
			if err != nil || stored.Limits != want || stored.PasswordHash != HashSecret("password-1") {
				t.Errorf("stored: got %+v, %v, want limits %+v and the credentials kept", stored, err, want)
			}
		})
	}
	if _, err := s.SetLimits(ctx, "api", "nobody", Limits{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown tenant: got %v, want %v", err, ErrNotFound)
	}
}

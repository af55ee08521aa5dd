package tenantapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"testing"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// TestStatusFor pins the one error-to-status mapping: every sentinel,
// wrapped or not, and text that merely looks like one (which must not count).
func TestStatusFor(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("ctx: %w", err) }
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 200},
		{"bad request", errorf(errBadRequest, "x"), 400},
		{"bad size", wrap(pools.ErrBadSize), 400},
		{"bad size from ParseSize", func() error { _, err := pools.ParseSize("65M"); return err }(), 400},
		{"bad dbs", wrap(pools.ErrBadDBs), 400},
		{"unauthorized", errorf(errUnauthorized, "x"), 401},
		{"forbidden", errorf(errForbidden, "x"), 403},
		{"not found", wrap(metadb.ErrNotFound), 404},
		{"no route", errorf(errNoRoute, "x"), 404},
		{"method", errorf(errMethod, "x"), 405},
		{"max bytes", wrap(&http.MaxBytesError{Limit: 1}), 413},
		{"too large", errorf(errTooLarge, "x"), 413},
		{"media type", errorf(errMediaType, "x"), 415},
		{"exists", wrap(metadb.ErrExists), 409},
		{"no capacity", pools.ErrNoCapacity, 409},
		{"no capacity wrapped", wrap(pools.ErrNoCapacity), 409},
		{"pools no capacity", errorf(pools.ErrNoCapacity, "no free 64M db"), 409},
		{"tenant limit", wrap(metadb.ErrTenantLimit), 409},
		{"bad state", wrap(metadb.ErrBadState), 409},
		{"conflict", metadb.ErrConflict, 409},
		{"pair check", wrap(pools.ErrPairCheck), 422},
		{"shrink does not fit", wrap(metadb.ErrNoFit), 422},
		{"import source refused", errorf(errSourceCheck, "x"), 422},
		{"not implemented", errorf(errNotImplemented, "x"), 501},
		{"create failed", errorf(errCreateFailed, "x"), 503},
		{"unavailable", errorf(errUnavailable, "x"), 503},
		{"not confirmed", wrap(metadb.ErrNotConfirmed), 503},
		{"deadline", wrap(context.DeadlineExceeded), 503},
		{"canceled", context.Canceled, 503},
		{"not leader", metadb.ErrNotLeader, 500},
		{"unknown", errors.New("boom"), 500},
		{"text is not a kind", errors.New("not found"), 500},
		{"text is not a kind either", errors.New("unknown size \"65M\""), 500},
		{"errorf keeps the cause", errorf(metadb.ErrBadState, "db 0: %w", metadb.ErrBadState), 409},
		{"errorf cause without kind match", errorf(errUnavailable, "metadb: %w", metadb.ErrNotConfirmed), 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := statusFor(tc.err); got != tc.want {
				t.Fatalf("statusFor(%v): got %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestErrorfMessage shows that the client reads the message alone, without
// the kind's text in front.
func TestErrorfMessage(t *testing.T) {
	err := errorf(errBadRequest, "bad db index %q", "x")
	if got, want := err.Error(), `bad db index "x"`; got != want {
		t.Fatalf("message: got %q, want %q", got, want)
	}
	err = errorf(errUnavailable, "metadb: %w", metadb.ErrNotConfirmed)
	if !errors.Is(err, errUnavailable) || !errors.Is(err, metadb.ErrNotConfirmed) {
		t.Fatalf("errors.Is: got false, want both the kind and the cause")
	}
}

func TestParseAddr(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1:6379", "127.0.0.1:6379", true},
		{" redis-a:06379 ", "redis-a:6379", true},
		{"[::1]:7000", "[::1]:7000", true},
		{"127.0.0.1", "", false},
		{":6379", "", false},
		{"h:0", "", false},
		{"h:65536", "", false},
		{"h:-1", "", false},
		{"h:abc", "", false},
		{"a b:1", "", false},
		{"user@h:1", "", false},
		{"", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseAddr("master", tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("parseAddr(%q): got %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
			}
			if err != nil && statusFor(err) != http.StatusBadRequest {
				t.Fatalf("status: got %v, want 400", statusFor(err))
			}
		})
	}
}

func TestNonEmptyDBs(t *testing.T) {
	info := "# Keyspace\r\ndb12:keys=3,expires=0,avg_ttl=0\r\ndb0:keys=1,expires=1,avg_ttl=5\r\ndb4:keys=0,expires=0,avg_ttl=0\r\nweird:keys=9\r\n"
	if got, want := nonEmptyDBs(info), []int{0, 12}; !reflect.DeepEqual(got, want) {
		t.Fatalf("nonEmptyDBs: got %v, want %v", got, want)
	}
	if got := nonEmptyDBs("# Keyspace\r\n"); got != nil {
		t.Fatalf("nonEmptyDBs of an empty server: got %v, want none", got)
	}
}

func TestCheckSpare(t *testing.T) {
	good := pools.ServerView{Addr: "h:1", Reachable: true, Role: "master"}
	cases := []struct {
		name   string
		tweak  func(v *pools.ServerView)
		status int
	}{
		{"good", func(v *pools.ServerView) {}, 200},
		{"registered", func(v *pools.ServerView) { v.RegisteredAs = "spare" }, 409},
		{"down", func(v *pools.ServerView) { v.Reachable = false }, 422},
		{"replica", func(v *pools.ServerView) { v.Role = "slave" }, 422},
		{"not empty", func(v *pools.ServerView) { v.NonEmptyDBs = []int{2} }, 422},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := good
			tc.tweak(&v)
			if got := statusFor(checkSpare(v)); got != tc.status {
				t.Fatalf("status: got %v, want %v", got, tc.status)
			}
		})
	}
}

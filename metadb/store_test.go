package metadb

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// TestConfirmedWrites checks that with Config.Replicas set every kind of
// write (optimistic transaction, Lua script) is confirmed by the metadb
// replica before it returns, and fails with ErrNotConfirmed, after about
// ConfirmTimeout, once the replica stops acknowledging.
func TestConfirmedWrites(t *testing.T) {
	master, replica := redistest.StartPair(t, "repl-diskless-sync-delay", "0")
	const timeout = 300 * time.Millisecond
	s := openStore(t, Config{URL: "redis://" + master.Addr, Replicas: 1, ConfirmTimeout: timeout})
	ctx := testCtx(t)
	rc := replica.Client(t)
	waitReplicaOnline(t, master)

	mustTenant(t, s, "acme")
	pair := addPair(t, s, "64M", 16)

	// Each write makes a fresh change, so the replica has something to confirm.
	n := 0
	writes := []struct {
		name  string
		write func() error
		key   func() string // a key the write created, to read on the replica
	}{
		{
			name:  "transaction",
			write: func() error { _, err := s.CreateTenant(ctx, "test", tenantName(n), "tok", "pw"); return err },
			key:   func() string { return keyTenant(tenantName(n)) },
		},
		{
			name: "claim script",
			write: func() error {
				_, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 1000, jobName(n))
				return err
			},
			key: func() string { return keyJob(jobName(n)) },
		},
		{
			name: "lease script",
			write: func() error {
				if err := s.Client().Del(ctx, keyLeader).Err(); err != nil {
					return err
				}
				_, _, err := s.AcquireLeader(ctx, "m1", time.Minute)
				return err
			},
			key: func() string { return keyLeader },
		},
		{
			name:  "announce",
			write: func() error { _, err := s.Announce(ctx, nil, "test"); return err },
			key:   func() string { return keyVersion },
		},
	}

	t.Run("replica up", func(t *testing.T) {
		for _, tc := range writes {
			t.Run(tc.name, func(t *testing.T) {
				n++
				if err := tc.write(); err != nil {
					t.Fatalf("write: got %v, want nil", err)
				}
				// Confirmed means the replica has it now, not eventually.
				if got, err := rc.Exists(ctx, tc.key()).Result(); err != nil || got != 1 {
					t.Errorf("replica EXISTS %s right after the write: got %d, %v, want 1, nil", tc.key(), got, err)
				}
			})
		}
	})

	if err := replica.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP replica: %v", err)
	}
	t.Cleanup(func() { _ = replica.Signal(syscall.SIGCONT) })

	t.Run("replica stopped", func(t *testing.T) {
		for _, tc := range writes {
			t.Run(tc.name, func(t *testing.T) {
				n++
				start := time.Now()
				err := tc.write()
				took := time.Since(start)
				if !errors.Is(err, ErrNotConfirmed) {
					t.Fatalf("write: got %v, want %v", err, ErrNotConfirmed)
				}
				if took < timeout || took > timeout+time.Second {
					t.Errorf("write failed after %v, want about the confirm timeout %v", took, timeout)
				}
			})
		}
	})
}

// TestConfirmTimeoutLongerThanReadTimeout: a WAIT that may block longer
// than the client's read timeout (3s by default) must still end in
// ErrNotConfirmed, not in a network timeout.
func TestConfirmTimeoutLongerThanReadTimeout(t *testing.T) {
	master, replica := redistest.StartPair(t, "repl-diskless-sync-delay", "0")
	const timeout = 3200 * time.Millisecond
	s := openStore(t, Config{URL: "redis://" + master.Addr, Replicas: 1, ConfirmTimeout: timeout})
	ctx := testCtx(t)
	waitReplicaOnline(t, master)
	if err := replica.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP replica: %v", err)
	}
	t.Cleanup(func() { _ = replica.Signal(syscall.SIGCONT) })
	start := time.Now()
	_, err := s.Announce(ctx, nil, "test")
	took := time.Since(start)
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("announce: got %v, want %v", err, ErrNotConfirmed)
	}
	if took < timeout || took > timeout+2*time.Second {
		t.Errorf("announce failed after %v, want about the confirm timeout %v", took, timeout)
	}
}

// TestConfirmedMissingReplicas: asking for more replicas than exist never
// confirms, even though the write itself goes through.
func TestConfirmedMissingReplicas(t *testing.T) {
	master, _ := redistest.StartPair(t, "repl-diskless-sync-delay", "0")
	s := openStore(t, Config{URL: "redis://" + master.Addr, Replicas: 2, ConfirmTimeout: 100 * time.Millisecond})
	_, err := s.Announce(t.Context(), nil, "test")
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("announce: got %v, want %v", err, ErrNotConfirmed)
	}
	// A member's lease counts on being confirmed too (see lease.go).
	err = s.Heartbeat(t.Context(), KindProxy, Member{ID: "px", Addr: "127.0.0.1:1"}, time.Minute)
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("heartbeat: got %v, want %v", err, ErrNotConfirmed)
	}
}

// waitReplicaOnline waits until the replica acknowledges a write: its link
// is up a moment (up to a second, its first REPLCONF ACK) before the master
// streams writes to it.
func waitReplicaOnline(t *testing.T, master *redistest.Server) {
	t.Helper()
	conn := master.Client(t).Conn()
	defer conn.Close()
	ctx := t.Context()
	redistest.WaitFor(t, 10*time.Second, "the replica to acknowledge a write", func() bool {
		// WAIT counts only writes made on its own connection.
		if err := conn.Incr(ctx, keySeq("probe")).Err(); err != nil {
			return false
		}
		n, err := conn.Wait(ctx, 1, 50*time.Millisecond).Result()
		return err == nil && n == 1
	})
}

func tenantName(n int) string { return "t" + field(n) }
func jobName(n int) string    { return "j" + field(n) }

// replyError stands for an error reply read from Redis (go-redis's own type
// is internal): what scriptError accepts as a script's refusal.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// TestScriptError pins the one mapping from a script's refusal code to its
// sentinel: the code is the reply's first word, exactly; the same words
// elsewhere, in another case, or in an error that Redis did not send, do
// not count.
func TestScriptError(t *testing.T) {
	netErr := errors.New("GRANARY_NOFREE")
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"nil", nil, nil},
		{"no free slot", replyError("GRANARY_NOFREE the pair has no free slot"), pools.ErrNoCapacity},
		{"code alone", replyError("GRANARY_NOFREE"), pools.ErrNoCapacity},
		{"no tenant", replyError("GRANARY_NOTENANT no such tenant"), ErrNotFound},
		{"tenant limit", replyError("GRANARY_TENANTLIMIT tenant db limit reached"), ErrTenantLimit},
		{"wrapped reply", fmt.Errorf("run: %w", replyError("GRANARY_NOFREE")), pools.ErrNoCapacity},
		{"old bare code", replyError("NOFREE"), replyError("NOFREE")},
		{"code not first", replyError("ERR GRANARY_NOFREE"), replyError("ERR GRANARY_NOFREE")},
		{"code in a longer word", replyError("GRANARY_NOFREEZE"), replyError("GRANARY_NOFREEZE")},
		{"lower case", replyError("granary_nofree"), replyError("granary_nofree")},
		{"unknown code", replyError("GRANARY_WHAT"), replyError("GRANARY_WHAT")},
		{"redis's own error", replyError("WRONGTYPE Operation against a key holding the wrong kind of value"),
			replyError("WRONGTYPE Operation against a key holding the wrong kind of value")},
		{"not a reply", netErr, netErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := scriptError(tc.err); got != tc.want {
				t.Fatalf("scriptError(%v): got %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// TestScriptRefusalOnTheWire: every refusal code, sent by a real script,
// reaches the caller of runConfirmed as its sentinel.
func TestScriptRefusalOnTheWire(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	refuse := redis.NewScript(`return redis.error_reply(ARGV[1] .. ' because')`)
	for code, want := range scriptCodes {
		t.Run(code, func(t *testing.T) {
			if _, err := s.runConfirmed(ctx, refuse, nil, code); err != want {
				t.Fatalf("runConfirmed: got %v, want %v", err, want)
			}
		})
	}
}

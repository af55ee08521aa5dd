package metadb

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fence is the proof that a master leads: its id and the fencing token it
// got when it took the lease. Writes made with a Fence are refused once the
// lease belongs to someone else, so a deposed leader cannot change state.
type Fence struct {
	ID    string
	Token int64
}

func (f *Fence) value() string { return f.ID + "/" + strconv.FormatInt(f.Token, 10) }

// holder is who acts under the fence, for job logs: "" without one.
func (f *Fence) holder() string {
	if f == nil {
		return ""
	}
	return f.ID
}

// The lease across a metadb failover (Config.Sentinels). Redis replicates
// asynchronously, so what a dying metadb master had not passed on is lost
// when Sentinel promotes a replica. The lease stays safe because a grant or
// renewal counts only once the replicas confirmed it (WAIT, Config.Replicas;
// AcquireLeader runs through runConfirmed):
//
//   - A grant that was not confirmed returns an error (ErrNotConfirmed or
//     the broken connection's), so no master acts on it. If the promoted
//     replica lacks it, the lease is free there and the fence counter is
//     one lower: the next grant may hand out the same token number again,
//     harmless because no write was ever made with the lost one. If the
//     replica has it, its holder renews it on its next attempt and gets the
//     same token.
//   - A confirmed grant is on the replica with its counter, so the
//     promoted replica never hands out a token at or below one a leader
//     used: fencing tokens only grow across failovers.
//   - A renewal that was not confirmed changes nothing that matters: the
//     promoted replica has the expiry of the last confirmed renewal (Redis
//     replicates an expiry as an absolute time), which is earlier than the
//     moment keepLease in the master gives up (a whole ttl after it saw
//     that renewal confirmed). In between, another master may lead, and
//     the old leader's writes are refused: every fenced write checks the
//     leader key in its own transaction, on whichever server is master.
//   - The old metadb master cannot bring an old lease back: Sentinel turns
//     it into a replica of the new master when it returns, and it drops its
//     data for a full copy of the new master's. While it is cut off but
//     alive, writes that reach it are not confirmed (its replicas follow
//     the new master), so they fail; running the metadb servers with
//     min-replicas-to-write 1 makes it refuse them outright.
//
// Tests (sentinel_test.go): TestUnconfirmedLeaseIsNoLease (an unconfirmed
// grant is an error), TestSentinelFailover (a confirmed lease and its token
// cross a failover, later tokens are larger), TestLeaseNotResurrected (a
// grant only the old master had is gone after the failover, and stays
// gone when the old master comes back).
//
// The proxies' and keepers' leases (Heartbeat) are confirmed the same way:
// a proxy fences itself a lease after its last confirmed renewal, and the
// master, reading the promoted replica, never sees an expiry older than
// the one the proxy counts on.
//
// With Replicas 0 none of this holds: a failover may lose a lease or hand
// out a used token again. With several replicas, Replicas should be all
// of them (WAIT n) or Sentinel might promote one that did not confirm.
// Expiry times are the metadb servers' clocks: keep them in sync (NTP).

// acquireScript takes the lease if it is free, or renews it if the caller
// holds it. It returns the fencing token, or 0 if another master leads.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '/', 1, true)
  if string.sub(cur, 1, sep - 1) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(string.sub(cur, sep + 1))
  end
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '/' .. token, 'PX', ARGV[2])
return token
`)

// AcquireLeader takes or renews the leader lease for id. It returns the
// Fence when id leads, and ok=false when another master holds the lease.
func (s *Store) AcquireLeader(ctx context.Context, id string, ttl time.Duration) (f *Fence, ok bool, err error) {
	if id == "" || strings.Contains(id, "/") {
		return nil, false, fmt.Errorf("bad master id %q", id)
	}
	res, err := s.runConfirmed(ctx, acquireScript, []string{keyLeader, keyFence}, id, ttl.Milliseconds())
	if err != nil {
		return nil, false, fmt.Errorf("acquire leader: %w", err)
	}
	tok, _ := res.(int64)
	if tok == 0 {
		return nil, false, nil
	}
	return &Fence{ID: id, Token: tok}, true, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// ReleaseLeader gives the lease up if f still holds it, so a standby can
// take over at once instead of waiting for the lease to lapse.
func (s *Store) ReleaseLeader(ctx context.Context, f *Fence) error {
	return releaseScript.Run(ctx, s.rdb, []string{keyLeader}, f.value()).Err()
}

// Leader returns the id of the leading master, or "" when none leads.
func (s *Store) Leader(ctx context.Context) (string, error) {
	v, err := s.rdb.Get(ctx, keyLeader).Result()
	if err == redis.Nil {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(v, "/")
	return id, nil
}

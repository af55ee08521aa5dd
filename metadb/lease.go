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

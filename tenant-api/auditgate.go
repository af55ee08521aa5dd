package tenantapi

import (
	"sync"
	"time"
)

// refusalGate bounds how many refusals the audit stream records, so that
// nobody can push the real entries out of the capped stream with junk: at
// most perKey entries a window for one key (the remote address of a refused
// admin credential, the tenant of a refused call) and at most total a
// window in all. Accepted actions are never gated. What it turns away is
// counted in granary_api_audit_dropped_total.
type refusalGate struct {
	window        time.Duration
	perKey, total int

	mu    sync.Mutex
	start time.Time
	seen  map[string]int // at most total keys: each one was let through once
	n     int
}

// Refusals recorded per window, by default.
const (
	auditRefusalWindow = time.Minute
	auditRefusalPerKey = 10
	auditRefusalTotal  = 120
)

func newRefusalGate(window time.Duration, perKey, total int) *refusalGate {
	return &refusalGate{window: window, perKey: perKey, total: total, seen: map[string]int{}}
}

// allow says whether a refusal for key, at now, is recorded.
func (g *refusalGate) allow(key string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.start) >= g.window {
		g.start, g.n = now, 0
		clear(g.seen)
	}
	if g.n >= g.total || g.seen[key] >= g.perKey {
		return false
	}
	g.seen[key]++
	g.n++
	return true
}

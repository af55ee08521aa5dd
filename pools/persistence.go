package pools

import (
	"fmt"
	"strings"
)

// Persistence is a pair's persistence policy, declared when the pair is
// added and checked against both servers' CONFIG; a spare attached to the
// pair after a failover is given it.
type Persistence string

// Policies.
const (
	PersistNone        Persistence = "none"         // no AOF: a restart loses the data (replguard keeps the replica's)
	PersistAOFEverysec Persistence = "aof-everysec" // AOF, fsync once a second: a host crash loses up to a second
	PersistAOFAlways   Persistence = "aof-always"   // AOF, fsync every write
)

// Persistences lists the policies.
var Persistences = []Persistence{PersistNone, PersistAOFEverysec, PersistAOFAlways}

// ParsePersistence reads a policy; "" is PersistNone.
func ParsePersistence(s string) (Persistence, error) {
	if s == "" {
		return PersistNone, nil
	}
	for _, p := range Persistences {
		if string(p) == s {
			return p, nil
		}
	}
	names := make([]string, len(Persistences))
	for i, p := range Persistences {
		names[i] = string(p)
	}
	return "", fmt.Errorf("%w %q: want one of %s", ErrBadPersistence, clipName(s), strings.Join(names, ", "))
}

// Config is the CONFIG a server under p has: appendonly, and appendfsync
// ("" when appendonly is no: any fsync setting goes).
func (p Persistence) Config() (appendonly, appendfsync string) {
	switch p {
	case PersistAOFEverysec:
		return "yes", "everysec"
	case PersistAOFAlways:
		return "yes", "always"
	}
	return "no", ""
}

// observedPersistence names what a server's CONFIG amounts to.
func observedPersistence(v ServerView) string {
	if v.AppendOnly != "yes" {
		return string(PersistNone)
	}
	return "aof-" + v.AppendFsync
}

// CheckPersistence refuses a pair whose servers do not run under p: the
// replica must, since it is what a failover keeps; the master must too, or
// run without persistence (the seed's recommended setup: persistence on
// the replica only, so the master spends nothing on disk; a restarted
// empty master is caught by the keeper's replication guard). It names the
// first server that does not and what it runs.
func CheckPersistence(p Persistence, master, replica ServerView) error {
	if !runsUnder(p, replica) {
		return fmt.Errorf("%w: replica %s runs with persistence %s (appendonly %s, appendfsync %s), not %s: set it with CONFIG SET or declare the pair's persistence",
			ErrPairCheck, replica.Addr, observedPersistence(replica), replica.AppendOnly, replica.AppendFsync, p)
	}
	if !runsUnder(p, master) && !runsUnder(PersistNone, master) {
		return fmt.Errorf("%w: master %s runs with persistence %s (appendonly %s, appendfsync %s), neither %s nor none",
			ErrPairCheck, master.Addr, observedPersistence(master), master.AppendOnly, master.AppendFsync, p)
	}
	return nil
}

// runsUnder reports whether v's CONFIG is p's.
func runsUnder(p Persistence, v ServerView) bool {
	appendonly, appendfsync := p.Config()
	return v.AppendOnly == appendonly && (appendfsync == "" || v.AppendFsync == appendfsync)
}

// clipName shortens untrusted input quoted in an error.
func clipName(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

package pools

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// ErrPairCheck is wrapped by every reason CheckPair refuses a pair.
var ErrPairCheck = errors.New("pair check failed")

// ServerView is what was observed of one Redis server of a candidate pair.
type ServerView struct {
	Addr         string
	Reachable    bool
	Err          string // why it was not reachable
	Role         string // "master" or "slave"
	ReplID       string // master_replid
	LinkUp       bool   // replica: master_link_status:up
	MasterHost   string // replica: master_host
	MasterPort   int    // replica: master_port
	Databases    int    // CONFIG GET databases
	MaxMemory    int64  // CONFIG GET maxmemory (0 = unlimited)
	NonEmptyDBs  []int  // dbs with keys, from INFO keyspace
	RegisteredAs string // non-empty if metadb already knows this address
	AppendOnly   string // CONFIG GET appendonly: "yes" or "no"
	AppendFsync  string // CONFIG GET appendfsync: "everysec", "always" or "no"
}

// CheckPair decides whether a pair may join a pool of the given size with
// the given db numbers. It names the first failing check.
func CheckPair(size Size, dbs []int, master, replica ServerView) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrPairCheck, fmt.Sprintf(format, a...))
	}
	if master.Addr == replica.Addr {
		return fail("master and replica are the same address %s", master.Addr)
	}
	for _, s := range []ServerView{master, replica} {
		if s.RegisteredAs != "" {
			return fail("%s is already registered (%s)", s.Addr, s.RegisteredAs)
		}
		if !s.Reachable {
			return fail("%s does not answer: %s", s.Addr, s.Err)
		}
	}
	if master.Role != "master" {
		return fail("%s is not a master (role %s)", master.Addr, master.Role)
	}
	if replica.Role != "slave" || !replica.LinkUp || replica.ReplID != master.ReplID {
		return fail("replica %s does not follow master %s (role %s, link up %v)", replica.Addr, master.Addr, replica.Role, replica.LinkUp)
	}
	// A replica chained behind another replica shares the master's
	// replication id; only its master_host/port say whom it follows.
	if !followsDirectly(replica, master.Addr) {
		return fail("replica %s follows %s:%d, not master %s directly", replica.Addr, replica.MasterHost, replica.MasterPort, master.Addr)
	}
	if len(dbs) == 0 {
		return fail("no db numbers given")
	}
	// dbs need not be sorted: the highest number decides what `databases` must cover.
	maxDB := dbs[0]
	for _, d := range dbs {
		maxDB = max(maxDB, d)
	}
	need := int64(len(dbs)) * size.Bytes()
	for _, s := range []ServerView{master, replica} {
		if s.Databases <= maxDB {
			return fail("%s has databases %d, db %d needs at least %d", s.Addr, s.Databases, maxDB, maxDB+1)
		}
		if s.MaxMemory != 0 && s.MaxMemory < need {
			return fail("%s maxmemory %d is below %d dbs x %s = %d bytes", s.Addr, s.MaxMemory, len(dbs), size, need)
		}
	}
	if master.MaxMemory == 0 {
		return fail("%s has no maxmemory; set it to at least %d bytes (%d dbs x %s)", master.Addr, need, len(dbs), size)
	}
	want := map[int]bool{}
	for _, d := range dbs {
		want[d] = true
	}
	for _, d := range master.NonEmptyDBs {
		if want[d] {
			return fail("db %d on %s is not empty", d, master.Addr)
		}
	}
	return nil
}

// followsDirectly compares the replica's master_host/master_port with the
// master's address. Ports must match; hosts are compared when both are IP
// literals (a name and an address cannot be compared without I/O, and the
// replication id check already tied the two together).
func followsDirectly(replica ServerView, masterAddr string) bool {
	host, port, err := net.SplitHostPort(masterAddr)
	if err != nil {
		return false
	}
	if strconv.Itoa(replica.MasterPort) != port {
		return false
	}
	a, b := net.ParseIP(host), net.ParseIP(replica.MasterHost)
	if a != nil && b != nil {
		return a.Equal(b) || (a.IsLoopback() && b.IsLoopback())
	}
	return true
}

package keeper

import (
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
)

// serverInfo is what the keeper reads of `INFO server replication`.
type serverInfo struct {
	runID  string
	uptime int64
	role   string // "master" or "slave"
	replID string
	// offset is master_repl_offset on a master, slave_repl_offset (what the
	// replica has applied) on a replica.
	offset int64
	// Replica side.
	masterAddr     string
	linkUp         bool
	linkDownSec    int64
	lastIOSec      int64
	syncInProgress bool
	// Master side: connected_slaves and the slaveN lines.
	connectedReplicas int
	replicas          []replicaLine
}

// replicaLine is one "slaveN:ip=…,port=…,state=…,offset=…,lag=…" line.
type replicaLine struct {
	addr   string
	state  string
	offset int64
	lag    int64
}

// parseInfo reads the fields of an INFO reply it knows and ignores the rest.
func parseInfo(s string) serverInfo {
	var in serverInfo
	var masterHost, masterPort string
	replicaOffset, masterOffset := int64(-1), int64(0)
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		num := func() int64 { n, _ := strconv.ParseInt(v, 10, 64); return n }
		switch k {
		case "run_id":
			in.runID = v
		case "uptime_in_seconds":
			in.uptime = num()
		case "role":
			in.role = v
		case "master_replid":
			in.replID = v
		case "master_repl_offset":
			masterOffset = num()
		case "slave_repl_offset":
			replicaOffset = num()
		case "master_host":
			masterHost = v
		case "master_port":
			masterPort = v
		case "master_link_status":
			in.linkUp = v == "up"
		case "master_link_down_since_seconds":
			in.linkDownSec = num()
		case "master_last_io_seconds_ago":
			in.lastIOSec = num()
		case "master_sync_in_progress":
			in.syncInProgress = v == "1"
		case "connected_slaves":
			in.connectedReplicas = int(num())
		default:
			if strings.HasPrefix(k, "slave") && isDigits(k[len("slave"):]) {
				in.replicas = append(in.replicas, parseReplicaLine(v))
			}
		}
	}
	if masterHost != "" {
		in.masterAddr = net.JoinHostPort(masterHost, masterPort)
	}
	in.offset = masterOffset
	if in.role == "slave" && replicaOffset >= 0 {
		in.offset = replicaOffset
	}
	return in
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func parseReplicaLine(v string) replicaLine {
	r := replicaLine{lag: -1}
	var ip, port string
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			ip = val
		case "port":
			port = val
		case "state":
			r.state = val
		case "offset":
			r.offset, _ = strconv.ParseInt(val, 10, 64)
		case "lag":
			r.lag, _ = strconv.ParseInt(val, 10, 64)
		}
	}
	r.addr = net.JoinHostPort(ip, port)
	return r
}

// findReplica is the master's line for the replica at addr: by address,
// else by port alone (a replica may announce another interface's ip).
func (in serverInfo) findReplica(addr string) (replicaLine, bool) {
	for _, r := range in.replicas {
		if r.addr == addr {
			return r, true
		}
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return replicaLine{}, false
	}
	var found replicaLine
	n := 0
	for _, r := range in.replicas {
		if _, p, _ := net.SplitHostPort(r.addr); p == port {
			found, n = r, n+1
		}
	}
	return found, n == 1
}

// observe folds one probe of a server into its health: in is the parsed INFO
// when the probe succeeded, probeErr why it failed otherwise. It returns the
// new health and whether anything a failover decision depends on changed
// (up/down, role, run id, replication link, whom a replica follows), which
// is worth reporting at once. A failed probe keeps everything last known
// (role, run id, offset…): it is what failover needs of a server that is
// gone.
func observe(prev metadb.NodeHealth, addr string, in *serverInfo, probeErr error, now time.Time) (metadb.NodeHealth, bool) {
	h := prev
	up := probeErr == nil && in != nil
	changed := prev.Addr != addr || prev.Up != up || prev.Since.IsZero()
	if prev.Addr != addr {
		h = metadb.NodeHealth{} // another server: nothing carries over
	}
	if changed {
		h.Addr, h.Up, h.Since = addr, up, now
	}
	if !up {
		h.Error = "no answer"
		if probeErr != nil {
			h.Error = probeErr.Error()
		}
		return h, changed
	}
	if in.runID != "" {
		if h.RunID != "" && in.runID != h.RunID {
			h.PrevRunID, h.RestartedAt = h.RunID, now
			changed = true
		}
		h.RunID = in.runID
	}
	if h.Role != in.role || h.LinkUp != in.linkUp || h.MasterAddr != in.masterAddr || h.SyncInProgress != in.syncInProgress {
		changed = true
	}
	h.Error = ""
	h.LastOK = now
	h.UptimeSec = in.uptime
	h.Role, h.ReplID, h.Offset = in.role, in.replID, in.offset
	h.MasterAddr, h.LinkUp, h.LinkDownSec = in.masterAddr, in.linkUp, in.linkDownSec
	h.LastIOSec, h.SyncInProgress = in.lastIOSec, in.syncInProgress
	h.ConnectedReplicas = in.connectedReplicas
	return h, changed
}

// pairView fills the pair-level fields of a report from the two servers'
// health and the master's INFO: the master's view of the replica, and the
// replication lag in bytes when both answered on the same replication id.
func pairView(h *metadb.PairHealth, masterInfo *serverInfo) {
	h.ReplicaState, h.LagSec, h.LagBytes = "", -1, -1
	if masterInfo != nil {
		if r, ok := masterInfo.findReplica(h.Replica.Addr); ok {
			h.ReplicaState, h.LagSec = r.state, r.lag
		}
	}
	m, r := h.Master, h.Replica
	if m.Up && r.Up && m.ReplID != "" && m.ReplID == r.ReplID {
		h.LagBytes = m.Offset - r.Offset
		if h.LagBytes < 0 {
			h.LagBytes = 0
		}
	}
}

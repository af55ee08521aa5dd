package keeper

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

func crlf(s string) string { return strings.ReplaceAll(strings.TrimLeft(s, "\n"), "\n", "\r\n") }

var masterInfo = crlf(`
# Server
redis_version:7.0.15
run_id:80a41069ba68cc968c97d885f39e4a0adf66c8ae
tcp_port:6379
uptime_in_seconds:42

# Replication
role:master
connected_slaves:2
slave0:ip=127.0.0.1,port=6380,state=online,offset=1234,lag=0
slave1:ip=10.0.0.9,port=7000,state=wait_bgsave,offset=0,lag=3
master_failover_state:no-failover
master_replid:2c2e50c389ba777c9238662d6648d6fcc7a25504
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:1300
second_repl_offset:-1
`)

var replicaInfo = crlf(`
# Server
run_id:ffff1069ba68cc968c97d885f39e4a0adf66c8ae
uptime_in_seconds:7

# Replication
role:slave
master_host:127.0.0.1
master_port:6379
master_link_status:up
master_last_io_seconds_ago:1
master_sync_in_progress:0
slave_read_repl_offset:1234
slave_repl_offset:1234
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_replid:2c2e50c389ba777c9238662d6648d6fcc7a25504
master_repl_offset:1234
`)

var brokenReplicaInfo = crlf(`
# Replication
role:slave
master_host:::1
master_port:6379
master_link_status:down
master_last_io_seconds_ago:-1
master_sync_in_progress:1
slave_repl_offset:99
master_link_down_since_seconds:12
`)

func TestParseInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want serverInfo
	}{
		{
			name: "master with two replicas",
			in:   masterInfo,
			want: serverInfo{runID: "80a41069ba68cc968c97d885f39e4a0adf66c8ae", uptime: 42, role: "master",
				replID: "2c2e50c389ba777c9238662d6648d6fcc7a25504", offset: 1300, connectedReplicas: 2,
				replicas: []replicaLine{
					{addr: "127.0.0.1:6380", state: "online", offset: 1234, lag: 0},
					{addr: "10.0.0.9:7000", state: "wait_bgsave", offset: 0, lag: 3},
				}},
		},
		{
			name: "replica in sync",
			in:   replicaInfo,
			want: serverInfo{runID: "ffff1069ba68cc968c97d885f39e4a0adf66c8ae", uptime: 7, role: "slave",
				replID: "2c2e50c389ba777c9238662d6648d6fcc7a25504", offset: 1234, masterAddr: "127.0.0.1:6379",
				linkUp: true, lastIOSec: 1},
		},
		{
			name: "replica with its link down, ipv6 master",
			in:   brokenReplicaInfo,
			want: serverInfo{role: "slave", offset: 99, masterAddr: "[::1]:6379", linkDownSec: 12,
				lastIOSec: -1, syncInProgress: true},
		},
		{
			name: "garbage",
			in:   "hello\r\n:\r\nslaveX:ip=1\r\n",
			want: serverInfo{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseInfo(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFindReplica(t *testing.T) {
	in := parseInfo(masterInfo)
	for _, tc := range []struct {
		addr  string
		want  string
		found bool
	}{
		{"127.0.0.1:6380", "online", true},
		{"replica.example:7000", "wait_bgsave", true}, // announced another ip
		{"127.0.0.1:6390", "", false},
		{"nonsense", "", false},
	} {
		r, ok := in.findReplica(tc.addr)
		if ok != tc.found || r.state != tc.want {
			t.Errorf("%s: got %q %v, want %q %v", tc.addr, r.state, ok, tc.want, tc.found)
		}
	}
}

func TestObserve(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Second)
	master := parseInfo(masterInfo)
	restarted := master
	restarted.runID = "0000restarted"
	replica := parseInfo(replicaInfo)
	broken := parseInfo(brokenReplicaInfo)
	upMaster := metadb.NodeHealth{Addr: "m:1", Up: true, Since: t0, LastOK: t0, Role: "master",
		RunID: master.runID, UptimeSec: 42, ReplID: master.replID, Offset: 1300, ConnectedReplicas: 2}
	downMaster := upMaster
	downMaster.Up, downMaster.Since, downMaster.Error = false, t1, "probe m:1: i/o timeout"
	upReplica := metadb.NodeHealth{Addr: "r:1", Up: true, Since: t0, LastOK: t0, Role: "slave",
		RunID: replica.runID, UptimeSec: 7, ReplID: replica.replID, Offset: 1234, MasterAddr: "127.0.0.1:6379",
		LinkUp: true, LastIOSec: 1}

	for _, tc := range []struct {
		name        string
		prev        metadb.NodeHealth
		addr        string
		in          *serverInfo
		err         error
		now         time.Time
		want        metadb.NodeHealth
		wantChanged bool
	}{
		{
			name: "first sight", addr: "m:1", in: &master, now: t0,
			want: upMaster, wantChanged: true,
		},
		{
			name: "same again: only LastOK moves", prev: upMaster, addr: "m:1", in: &master, now: t1,
			want: func() metadb.NodeHealth { h := upMaster; h.LastOK = t1; return h }(),
		},
		{
			name: "goes down: keeps what it knew", prev: upMaster, addr: "m:1",
			err: errors.New("probe m:1: i/o timeout"), now: t1,
			want: downMaster, wantChanged: true,
		},
		{
			name: "still down: since stays", prev: downMaster, addr: "m:1",
			err: errors.New("probe m:1: i/o timeout"), now: t1.Add(time.Second),
			want: downMaster,
		},
		{
			name: "back with a new run id: a restart", prev: downMaster, addr: "m:1", in: &restarted, now: t1.Add(time.Second),
			want: func() metadb.NodeHealth {
				h := upMaster
				h.Since, h.LastOK = t1.Add(time.Second), t1.Add(time.Second)
				h.RunID, h.PrevRunID, h.RestartedAt = "0000restarted", master.runID, t1.Add(time.Second)
				return h
			}(),
			wantChanged: true,
		},
		{
			name: "restart seen without a failed probe", prev: upMaster, addr: "m:1", in: &restarted, now: t1,
			want: func() metadb.NodeHealth {
				h := upMaster
				h.LastOK = t1
				h.RunID, h.PrevRunID, h.RestartedAt = "0000restarted", master.runID, t1
				return h
			}(),
			wantChanged: true,
		},
		{
			name: "replica link breaks while it answers", prev: upReplica, addr: "r:1", in: &broken, now: t1,
			want: metadb.NodeHealth{Addr: "r:1", Up: true, Since: t0, LastOK: t1, Role: "slave", RunID: replica.runID,
				Offset: 99, MasterAddr: "[::1]:6379", LinkDownSec: 12, LastIOSec: -1, SyncInProgress: true},
			wantChanged: true,
		},
		{
			name: "another server at the pair's place: nothing carries over", prev: downMaster, addr: "m:2",
			err: errors.New("refused"), now: t1,
			want:        metadb.NodeHealth{Addr: "m:2", Since: t1, Error: "refused"},
			wantChanged: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, changed := observe(tc.prev, tc.addr, tc.in, tc.err, tc.now)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if changed != tc.wantChanged {
				t.Fatalf("got changed %v, want %v", changed, tc.wantChanged)
			}
		})
	}
}

func TestPairView(t *testing.T) {
	master := parseInfo(masterInfo)
	up := func(role, replID string, off int64) metadb.NodeHealth {
		return metadb.NodeHealth{Addr: "127.0.0.1:6380", Up: true, Role: role, ReplID: replID, Offset: off}
	}
	for _, tc := range []struct {
		name      string
		h         metadb.PairHealth
		in        *serverInfo
		wantState string
		wantLag   int64
		wantBytes int64
	}{
		{
			name:      "in step",
			h:         metadb.PairHealth{Master: up("master", "r1", 1300), Replica: up("slave", "r1", 1234)},
			in:        &master,
			wantState: "online", wantLag: 0, wantBytes: 66,
		},
		{
			name:      "different replication ids: offsets not comparable",
			h:         metadb.PairHealth{Master: up("master", "r1", 1300), Replica: up("slave", "r2", 1234)},
			in:        &master,
			wantState: "online", wantLag: 0, wantBytes: -1,
		},
		{
			name:      "master down",
			h:         metadb.PairHealth{Master: metadb.NodeHealth{ReplID: "r1", Offset: 1300}, Replica: up("slave", "r1", 1234)},
			wantState: "", wantLag: -1, wantBytes: -1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			pairView(&h, tc.in)
			if h.ReplicaState != tc.wantState || h.LagSec != tc.wantLag || h.LagBytes != tc.wantBytes {
				t.Fatalf("got state %q lag %ds %dB, want %q %ds %dB", h.ReplicaState, h.LagSec, h.LagBytes,
					tc.wantState, tc.wantLag, tc.wantBytes)
			}
		})
	}
}

package pools

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckPair(t *testing.T) {
	const replID = "8f0c3b5d2d6f4c1e9a7b6c5d4e3f2a1b0c9d8e7f"
	dbs := seq(0, 15)
	need := int64(len(dbs)) * Size64M.Bytes()
	goodMaster := func() ServerView {
		return ServerView{Addr: "10.0.0.1:6379", Reachable: true, Role: "master", ReplID: replID,
			Databases: 16, MaxMemory: need}
	}
	goodReplica := func() ServerView {
		return ServerView{Addr: "10.0.0.2:6379", Reachable: true, Role: "slave", ReplID: replID, LinkUp: true,
			MasterHost: "10.0.0.1", MasterPort: 6379, Databases: 16}
	}
	tests := []struct {
		name    string
		dbs     []int
		master  func(*ServerView)
		replica func(*ServerView)
		want    string // part of the failure message; "" for a pass
	}{
		{name: "pass"},
		{name: "pass with replica maxmemory covering", replica: func(s *ServerView) { s.MaxMemory = need }},
		{name: "pass with a subset of dbs", dbs: []int{2, 5}, master: func(s *ServerView) { s.MaxMemory = 2 * Size64M.Bytes(); s.NonEmptyDBs = []int{0, 1} }},
		{name: "same address", replica: func(s *ServerView) { s.Addr = "10.0.0.1:6379" }, want: "same address"},
		{name: "master registered", master: func(s *ServerView) { s.RegisteredAs = "pair p1 master" }, want: "10.0.0.1:6379 is already registered (pair p1 master)"},
		{name: "replica registered", replica: func(s *ServerView) { s.RegisteredAs = "spare" }, want: "10.0.0.2:6379 is already registered (spare)"},
		{name: "master unreachable", master: func(s *ServerView) { s.Reachable = false; s.Err = "connection refused" }, want: "10.0.0.1:6379 does not answer: connection refused"},
		{name: "replica unreachable", replica: func(s *ServerView) { s.Reachable = false; s.Err = "i/o timeout" }, want: "10.0.0.2:6379 does not answer: i/o timeout"},
		{name: "master is a replica", master: func(s *ServerView) { s.Role = "slave" }, want: "is not a master"},
		{name: "replica is a master", replica: func(s *ServerView) { s.Role = "master" }, want: "does not follow master"},
		{name: "replica link down", replica: func(s *ServerView) { s.LinkUp = false }, want: "does not follow master"},
		{name: "replica follows another master", replica: func(s *ServerView) { s.ReplID = "another" }, want: "does not follow master"},
		{name: "replica chained behind another replica", replica: func(s *ServerView) { s.MasterHost = "10.0.0.3" }, want: "follows 10.0.0.3:6379, not master 10.0.0.1:6379 directly"},
		{name: "replica follows another port", replica: func(s *ServerView) { s.MasterPort = 6380 }, want: "not master 10.0.0.1:6379 directly"},
		{name: "pass with master named by host name", replica: func(s *ServerView) { s.MasterHost = "redis-a.internal" }},
		{name: "no dbs", dbs: []int{}, want: "no db numbers"},
		{name: "master databases too few", master: func(s *ServerView) { s.Databases = 15 }, want: "10.0.0.1:6379 has databases 15"},
		{name: "replica databases too few", replica: func(s *ServerView) { s.Databases = 8 }, want: "10.0.0.2:6379 has databases 8"},
		{name: "databases too few for unsorted dbs", dbs: []int{40, 3}, master: func(s *ServerView) { s.MaxMemory = 2 * Size64M.Bytes() }, want: "db 40 needs at least 41"},
		{name: "master maxmemory too small", master: func(s *ServerView) { s.MaxMemory = need - 1 }, want: "10.0.0.1:6379 maxmemory"},
		{name: "replica maxmemory too small", replica: func(s *ServerView) { s.MaxMemory = need / 2 }, want: "10.0.0.2:6379 maxmemory"},
		{name: "master maxmemory unset", master: func(s *ServerView) { s.MaxMemory = 0 }, want: "10.0.0.1:6379 has no maxmemory"},
		{name: "db not empty", master: func(s *ServerView) { s.NonEmptyDBs = []int{7} }, want: "db 7 on 10.0.0.1:6379 is not empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, r := goodMaster(), goodReplica()
			if tc.master != nil {
				tc.master(&m)
			}
			if tc.replica != nil {
				tc.replica(&r)
			}
			d := dbs
			if tc.dbs != nil {
				d = tc.dbs
			}
			err := CheckPair(Size64M, d, m, r)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckPair = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrPairCheck) {
				t.Fatalf("CheckPair = %v, want an error wrapping %v", err, ErrPairCheck)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("CheckPair = %q, want it to name %q", err, tc.want)
			}
		})
	}
}

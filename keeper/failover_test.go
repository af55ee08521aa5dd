package keeper

import (
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

func TestDecideFailover(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	started := t0.Add(-time.Minute)
	detect := time.Second
	up := func(role, repl string) metadb.NodeHealth {
		return metadb.NodeHealth{Addr: "r:1", Up: true, Role: role, ReplID: repl, RunID: "r", LastOK: t0}
	}
	master := metadb.NodeHealth{Addr: "m:1", Up: true, Role: "master", ReplID: "a", RunID: "m", LastOK: t0}
	down := func(lastOK time.Duration) metadb.NodeHealth {
		m := master
		m.Up, m.Since = false, t0.Add(-lastOK+100*time.Millisecond)
		m.LastOK = t0.Add(-lastOK)
		return m
	}
	replicaLost := up("slave", "a")
	replicaSees := up("slave", "a")
	replicaSees.LinkUp = true
	replicaSilent := replicaSees
	replicaSilent.LastIOSec = 20
	restarted := master
	restarted.RunID, restarted.PrevRunID, restarted.RestartedAt, restarted.ReplID = "m2", "m", t0, "b"
	restartedBefore := restarted
	restartedBefore.RestartedAt = started.Add(-time.Second)
	resynced := replicaSees
	resynced.ReplID = "b"
	firstSeen := restarted // a watcher's first probe: no run id before it
	firstSeen.PrevRunID, firstSeen.RestartedAt = "", time.Time{}
	tests := []struct {
		name    string
		m, r    metadb.NodeHealth
		promote bool
		fenced  string // run id the replication credential was made on
	}{
		{"healthy", master, replicaSees, false, ""},
		{"down within detection", down(900 * time.Millisecond), replicaLost, false, ""},
		{"down past detection, replica lost it", down(1100 * time.Millisecond), replicaLost, true, ""},
		{"down past detection, replica still sees it", down(5 * time.Second), replicaSees, false, ""},
		{"down, replica link up but silent", down(5 * time.Second), replicaSilent, true, ""},
		{"down, replica down", down(5 * time.Second), metadb.NodeHealth{Addr: "r:1"}, false, ""},
		{"down, replica promoted by us before", down(5 * time.Second), up("master", "c"), true, ""},
		{"down, replica restarted empty", down(5 * time.Second), up("slave", "z"), false, ""},
		{"restarted, replica not resynced", restarted, replicaLost, true, ""},
		{"restarted, replica resynced already", restarted, resynced, false, ""},
		{"restart seen before this watcher", restartedBefore, replicaSees, false, ""},
		{"master up, replica promoted but not recorded", master, up("master", "c"), true, ""},
		{"credential made on this run", master, replicaSees, false, "m"},
		{"restart seen before this watcher, credential on the old run", restartedBefore, replicaLost, true, "m"},
		{"restart never seen by a probe, credential on the old run", firstSeen, replicaLost, true, "m"},
		{"credential on the old run, replica resynced already", restartedBefore, resynced, false, "m"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := decideFailover(metadb.PairHealth{Master: tc.m, Replica: tc.r}, started, tc.fenced, detect, t0)
			if d.promote != tc.promote {
				t.Fatalf("got promote %v (%s), want %v", d.promote, d.reason, tc.promote)
			}
		})
	}
}

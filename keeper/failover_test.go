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
	// A hung master: the replica's link stays up; it has heard nothing
	// for a second (quiet) or is still hearing it (replicaSees).
	replicaQuietNow := replicaSees
	replicaQuietNow.LastIOSec = 1
	replicaSilent3, replicaSilent2 := replicaSees, replicaSees
	replicaSilent3.LastIOSec, replicaSilent2.LastIOSec = 3, 2
	stalled := proxyView{stalled: "px"}
	sees := proxyView{sees: "px"}
	both := proxyView{sees: "px2", stalled: "px"}
	tests := []struct {
		name    string
		m, r    metadb.NodeHealth
		promote bool
		fenced  string    // run id the replication credential was made on
		px      proxyView // what the proxies say of an unreachable master
		fast    bool      // the master pings its replica every second
	}{
		{"healthy", master, replicaSees, false, "", proxyView{}, false},
		{"down within detection", down(900 * time.Millisecond), replicaLost, false, "", proxyView{}, false},
		{"down past detection, replica lost it", down(1100 * time.Millisecond), replicaLost, true, "", proxyView{}, false},
		{"down past detection, replica still sees it", down(5 * time.Second), replicaSees, false, "", proxyView{}, false},
		{"down, replica link up but silent", down(5 * time.Second), replicaSilent, true, "", proxyView{}, false},
		{"down, replica down", down(5 * time.Second), metadb.NodeHealth{Addr: "r:1"}, false, "", proxyView{}, false},
		{"down, replica promoted by us before", down(5 * time.Second), up("master", "c"), true, "", proxyView{}, false},
		{"down, replica restarted empty", down(5 * time.Second), up("slave", "z"), false, "", proxyView{}, false},
		{"restarted, replica not resynced", restarted, replicaLost, true, "", proxyView{}, false},
		{"restarted, replica resynced already", restarted, resynced, false, "", proxyView{}, false},
		{"restart seen before this watcher", restartedBefore, replicaSees, false, "", proxyView{}, false},
		{"master up, replica promoted but not recorded", master, up("master", "c"), true, "", proxyView{}, false},
		{"credential made on this run", master, replicaSees, false, "m", proxyView{}, false},
		{"restart seen before this watcher, credential on the old run", restartedBefore, replicaLost, true, "m", proxyView{}, false},
		{"restart never seen by a probe, credential on the old run", firstSeen, replicaLost, true, "m", proxyView{}, false},
		{"credential on the old run, replica resynced already", restartedBefore, resynced, false, "m", proxyView{}, false},
		{"hung: proxy stalled, replica quiet", down(1100 * time.Millisecond), replicaQuietNow, true, "", stalled, false},
		{"hung: proxy stalled, within detection", down(900 * time.Millisecond), replicaQuietNow, false, "", stalled, false},
		{"hung: proxy stalled, replica still hears it", down(5 * time.Second), replicaSees, false, "", stalled, false},
		{"hung: replica quiet, no proxy stalled", down(5 * time.Second), replicaQuietNow, false, "", proxyView{}, false},
		{"hung: one proxy stalled, another still reaches it", down(5 * time.Second), replicaQuietNow, false, "", both, false},
		{"hung: proxy stalled, replica restarted empty", down(5 * time.Second), func() metadb.NodeHealth { r := replicaQuietNow; r.ReplID = "z"; return r }(), false, "", stalled, false},
		{"hung: proxy stalled, replica down", down(5 * time.Second), metadb.NodeHealth{Addr: "r:1"}, false, "", stalled, false},
		{"down, replica lost it, a proxy still reaches it", down(5 * time.Second), replicaLost, false, "", sees, false},
		{"down, replica silent, a proxy still reaches it", down(5 * time.Second), replicaSilent, false, "", sees, false},
		{"down, replica promoted before, a proxy still reaches it", down(5 * time.Second), up("master", "c"), false, "", sees, false},
		{"master up, a proxy stalled on it", master, replicaQuietNow, false, "", stalled, false},
		{"idle hung: replica silent 3s, master pinging every second", down(5 * time.Second), replicaSilent3, true, "", proxyView{}, true},
		{"idle hung: replica silent 3s, master pinging every 10s", down(5 * time.Second), replicaSilent3, false, "", proxyView{}, false},
		{"idle hung: replica silent 2s, master pinging every second", down(5 * time.Second), replicaSilent2, false, "", proxyView{}, true},
		{"idle hung: replica silent 3s, fast ping, a proxy still reaches it", down(5 * time.Second), replicaSilent3, false, "", sees, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			silence := replicaSilence
			if tc.fast {
				silence = replicaSilenceFast
			}
			d := decideFailover(metadb.PairHealth{Master: tc.m, Replica: tc.r}, tc.px, started, tc.fenced, silence, detect, t0)
			if d.promote != tc.promote {
				t.Fatalf("got promote %v (%s), want %v", d.promote, d.reason, tc.promote)
			}
		})
	}
}

func TestMasterProbeTimeout(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	timeout, interval, detect := 500*time.Millisecond, 250*time.Millisecond, time.Second
	down := func(lastOK time.Duration) metadb.NodeHealth {
		return metadb.NodeHealth{Addr: "m:1", LastOK: now.Add(-lastOK)}
	}
	tests := []struct {
		name string
		m    metadb.NodeHealth
		want time.Duration
	}{
		{"up: the probe timeout", metadb.NodeHealth{Addr: "m:1", Up: true, LastOK: now}, timeout},
		{"down: the interval", down(100 * time.Millisecond), interval},
		{"down: ends with the detection time", down(850 * time.Millisecond), 150 * time.Millisecond},
		{"down past detection: the interval", down(2 * time.Second), interval},
		{"down, detection about to end: the interval", down(995 * time.Millisecond), interval},
		{"down, never up: the interval", metadb.NodeHealth{Addr: "m:1"}, interval},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := masterProbeTimeout(tc.m, timeout, interval, detect, now); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

package proxy

import (
	"testing"
	"time"
)

func TestChooseMarker(t *testing.T) {
	const now = int64(100 * time.Second)
	due := now - int64(probeInterval) - 1 // the last probe is older than probeInterval
	recent := now - int64(probeInterval)  // exactly probeInterval ago: not yet
	for _, tc := range []struct {
		name string
		s    markerState
		want markerKind
	}{
		{"idle reads", markerState{writeSeq: 4, ackedSeq: 4, now: now, lastProbe: due}, markNone},
		{"confirmed write", markerState{confirm: true, writes: true, writeSeq: 1, now: now}, markWait},
		{"confirmed write behind a WAIT", markerState{confirm: true, writes: true, waitOut: true, writeSeq: 2, now: now}, markDefer},
		{"owed WAIT after the last returned", markerState{wantWait: true, writeSeq: 3, ackedSeq: 1, now: now}, markWait},
		{"owed WAIT while one is out", markerState{wantWait: true, waitOut: true, writeSeq: 3, now: now}, markDefer},
		{"confirmed write while probing", markerState{confirm: true, writes: true, probing: true, writeSeq: 2, now: now}, markWait},
		{"confirmed write with a probe due", markerState{confirm: true, writes: true, writeSeq: 2, now: now, lastProbe: due}, markWait},
		{"async write, probe due", markerState{writes: true, writeSeq: 1, now: now, lastProbe: due}, markProbe},
		{"async write, probe just sent", markerState{writes: true, writeSeq: 1, now: now, lastProbe: recent}, markNone},
		{"async write, probe in flight", markerState{writes: true, probing: true, writeSeq: 1, now: now, lastProbe: due}, markNone},
		{"async write behind a confirming WAIT", markerState{writes: true, waitOut: true, writeSeq: 2, now: now, lastProbe: due}, markNone},
		{"reads after unacknowledged writes", markerState{writeSeq: 5, ackedSeq: 3, now: now, lastProbe: due}, markProbe},
		{"reads after unacknowledged writes, probe just sent", markerState{writeSeq: 5, ackedSeq: 3, now: now, lastProbe: recent}, markNone},
		{"first batch of a connection", markerState{now: now}, markNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := chooseMarker(tc.s); got != tc.want {
				t.Errorf("chooseMarker(%+v): got %v, want %v", tc.s, got, tc.want)
			}
		})
	}
}

package keeper

import "testing"

// sameFor is n values of size x: a spread of 0.
func sameFor(n int, x int64) moments {
	var m moments
	for i := 0; i < n; i++ {
		m.add(x)
	}
	return m
}

func TestPassNext(t *testing.T) {
	plan := samplePlan{pilot: 100, max: 20000, target: 0.02}
	type want struct {
		trip     roundTrip
		scanning bool
	}
	for _, tc := range []struct {
		name string
		p    pass
		want want
	}{
		{
			name: "empty db: nothing to scan",
			p:    newPass(observation{}, false, plan),
			want: want{passDone, false},
		},
		{
			name: "a db with keys starts with a SCAN",
			p:    newPass(observation{keys: 10}, true, plan),
			want: want{passScan, true},
		},
		{
			name: "exact: SCAN goes on with the pending keys",
			p:    pass{exact: true, scanning: true, pending: 50, target: -1},
			want: want{passScan, true},
		},
		{
			name: "exact: SCAN over, the last keys still to read",
			p:    pass{exact: true, pending: 50, target: -1},
			want: want{passRead, false},
		},
		{
			name: "exact: SCAN over and every key read",
			p:    pass{exact: true, o: observation{keys: 50, sampled: sameFor(50, 10)}, target: -1},
			want: want{passDone, false},
		},
		{
			name: "sampled, before the pilot: no target yet, SCAN goes on",
			p:    pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(50, 10)}, pending: 100, scanning: true, target: -1},
			want: want{passScan, true},
		},
		{
			name: "sampled, target read: done, pending keys are not in the sample",
			p:    pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(500, 10)}, pending: 80, scanning: true, target: 500},
			want: want{passDone, true},
		},
		{
			name: "sampled, pending keys reach the target: read them, scan no more",
			p:    pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(450, 10)}, pending: 80, scanning: true, target: 500},
			want: want{passRead, false},
		},
		{
			name: "sampled, pending keys short of the target: SCAN goes on",
			p:    pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(400, 10)}, pending: 80, scanning: true, target: 500},
			want: want{passScan, true},
		},
		{
			name: "sampled, keys deleted before they were read left the sample short: SCAN stays over",
			p:    pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(470, 10)}, target: 500},
			want: want{passDone, false},
		},
		{
			name: "sampled, SCAN over before the target: read what is pending",
			p:    pass{plan: plan, o: observation{keys: 130, sampled: sameFor(100, 10)}, pending: 30, target: 500},
			want: want{passRead, false},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, trip := tc.p.next()
			if got := (want{trip, p.scanning}); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPassAfter(t *testing.T) {
	plan := samplePlan{pilot: 100, max: 20000, target: 0.02}
	type want struct {
		scanning bool
		wraps    int
		target   int64
	}
	for _, tc := range []struct {
		name   string
		p      pass
		cursor uint64
		want   want
	}{
		{
			name:   "exact: mid-table, SCAN goes on",
			p:      pass{exact: true, plan: plan, o: observation{keys: 5000, sampled: sameFor(200, 10)}, scanning: true, target: -1},
			cursor: 1234,
			want:   want{true, 0, -1},
		},
		{
			name:   "exact: the end of the table ends SCAN, and an exact pass has no target",
			p:      pass{exact: true, plan: plan, o: observation{keys: 5000, sampled: sameFor(4900, 10)}, scanning: true, target: -1},
			cursor: 0,
			want:   want{false, 1, -1},
		},
		{
			name:   "sampled: the first end of the table wraps to the beginning",
			p:      pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(50, 10)}, seen: 300, scanning: true, target: -1},
			cursor: 0,
			want:   want{true, 1, -1},
		},
		{
			name:   "sampled: the second end of the table ends SCAN, and the target is decided from what was read",
			p:      pass{plan: plan, o: observation{keys: 60, sampled: sameFor(40, 10)}, pending: 10, seen: 50, scanning: true, wraps: 1, target: -1},
			cursor: 0,
			// No spread: the pilot, clamped to the 60 keys of the db.
			want: want{false, 2, 60},
		},
		{
			name:   "sampled: every key of the stratum seen ends SCAN mid-table",
			p:      pass{plan: plan, o: observation{keys: 1000, certainKeys: 10, sampled: sameFor(900, 10)}, pending: 90, seen: 990, scanning: true, target: 500},
			cursor: 77,
			want:   want{false, 0, 500},
		},
		{
			name:   "sampled: one key of the stratum not seen yet, SCAN goes on",
			p:      pass{plan: plan, o: observation{keys: 1000, certainKeys: 10, sampled: sameFor(900, 10)}, pending: 89, seen: 989, scanning: true, target: 500},
			cursor: 77,
			want:   want{true, 0, 500},
		},
		{
			name:   "no SCAN in the round trip: its cursor means nothing",
			p:      pass{plan: plan, o: observation{keys: 100000, sampled: sameFor(480, 10)}, seen: 480, wraps: 1, target: 500},
			cursor: 0,
			want:   want{false, 1, 500},
		},
		{
			name:   "sampled: pilot not read yet, no target",
			p:      pass{plan: plan, o: observation{keys: 1000000, sampled: halves(99, 100)}, pending: 100, seen: 199, scanning: true, target: -1},
			cursor: 5,
			want:   want{true, 0, -1},
		},
		{
			name: "sampled: pilot read, the target from its spread",
			p:    pass{plan: plan, o: observation{keys: 1000000, sampled: halves(1000, 100)}, pending: 100, seen: 1100, scanning: true, target: -1},
			// sampleTarget's "cv 1 at ±2%" case.
			cursor: 5,
			want:   want{true, 0, 9545},
		},
		{
			name:   "sampled: the target is decided once, later spread does not move it",
			p:      pass{plan: plan, o: observation{keys: 1000000, sampled: halves(1000, 100)}, pending: 100, seen: 1100, scanning: true, target: 100},
			cursor: 5,
			want:   want{true, 0, 100},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p.after(tc.cursor)
			if got := (want{p.scanning, p.wraps, p.target}); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPassMeanKeySize(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    pass
		want float64
	}{
		{"exact: the sum over the count", pass{exact: true, o: observation{sampled: momentsOf(1, 2, 4)}}, 7.0 / 3},
		{"sampled: the running mean", pass{o: observation{sampled: momentsOf(10, 20)}}, 15},
		{"nothing read", pass{exact: true}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.meanKeySize(); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

package keeper

import (
	"context"
	"testing"
	"time"
)

func TestSchedule(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b, c := dbKey{"acme", 0}, dbKey{"acme", 1}, dbKey{"zeta", 0}
	gap := time.Second

	type step struct {
		op     string // add, take, done
		key    dbKey
		reason string
		at     time.Duration
		// take's expectations
		wantKey    dbKey
		wantReason string
		wantOK     bool
		wantWait   time.Duration
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{
			name: "written before swept, then by due time",
			steps: []step{
				{op: "add", key: a, reason: reasonSweep},
				{op: "add", key: b, reason: reasonWritten, at: time.Millisecond},
				{op: "add", key: c, reason: reasonSweep, at: 2 * time.Millisecond},
				{op: "take", at: 3 * time.Millisecond, wantKey: b, wantReason: reasonWritten, wantOK: true},
				{op: "take", at: 3 * time.Millisecond, wantKey: a, wantReason: reasonSweep, wantOK: true},
				{op: "take", at: 3 * time.Millisecond, wantKey: c, wantReason: reasonSweep, wantOK: true},
				{op: "take", at: 3 * time.Millisecond, wantOK: false},
			},
		},
		{
			name: "requests for one db coalesce, and a write upgrades a sweep",
			steps: []step{
				{op: "add", key: a, reason: reasonSweep},
				{op: "add", key: a, reason: reasonWritten},
				{op: "add", key: a, reason: reasonSweep},
				{op: "take", wantKey: a, wantReason: reasonWritten, wantOK: true},
				{op: "take", wantOK: false},
			},
		},
		{
			name: "a db in flight is not taken twice; writes meanwhile wait for the gap",
			steps: []step{
				{op: "add", key: a, reason: reasonWritten},
				{op: "take", wantKey: a, wantReason: reasonWritten, wantOK: true},
				{op: "add", key: a, reason: reasonWritten, at: 100 * time.Millisecond},
				{op: "take", at: 100 * time.Millisecond, wantOK: false},
				{op: "done", key: a, at: 300 * time.Millisecond},
				{op: "take", at: 300 * time.Millisecond, wantOK: false, wantWait: gap},
				{op: "take", at: 1300 * time.Millisecond, wantKey: a, wantReason: reasonWritten, wantOK: true},
			},
		},
		{
			name: "a db measured lately waits for the gap; others do not",
			steps: []step{
				{op: "add", key: a, reason: reasonWritten},
				{op: "take", wantKey: a, wantReason: reasonWritten, wantOK: true},
				{op: "done", key: a, at: 10 * time.Millisecond},
				{op: "add", key: a, reason: reasonWritten, at: 20 * time.Millisecond},
				{op: "add", key: b, reason: reasonSweep, at: 20 * time.Millisecond},
				{op: "take", at: 20 * time.Millisecond, wantKey: b, wantReason: reasonSweep, wantOK: true},
				{op: "take", at: 20 * time.Millisecond, wantOK: false, wantWait: 990 * time.Millisecond},
				{op: "take", at: 1010 * time.Millisecond, wantKey: a, wantReason: reasonWritten, wantOK: true},
			},
		},
		{
			name: "long after its last measurement a db is due at once",
			steps: []step{
				{op: "add", key: a, reason: reasonWritten},
				{op: "take", wantKey: a, wantReason: reasonWritten, wantOK: true},
				{op: "done", key: a},
				{op: "add", key: a, reason: reasonSweep, at: time.Hour},
				{op: "take", at: time.Hour, wantKey: a, wantReason: reasonSweep, wantOK: true},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSchedule(gap)
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				switch st.op {
				case "add":
					s.add(st.key, st.reason, now)
				case "done":
					s.done(st.key, now)
				case "take":
					got, wait, ok := s.take(now)
					if ok != st.wantOK || got.key != st.wantKey || got.reason != st.wantReason || wait != st.wantWait {
						t.Fatalf("step %d: got %v %q ok=%v wait=%v, want %v %q ok=%v wait=%v", i,
							got.key, got.reason, ok, wait, st.wantKey, st.wantReason, st.wantOK, st.wantWait)
					}
				}
			}
		})
	}
}

// TestScheduleNextWakesEveryWorker checks that tasks added in a burst reach
// every waiting worker, not only the first one woken.
func TestScheduleNextWakesEveryWorker(t *testing.T) {
	s := newSchedule(time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got := make(chan dbKey, 3)
	for i := 0; i < 3; i++ {
		go func() {
			if tk, ok := s.next(ctx); ok {
				got <- tk.key
			}
		}()
	}
	for i := 0; i < 3; i++ {
		s.add(dbKey{"t", i}, reasonWritten, time.Now())
	}
	seen := map[dbKey]bool{}
	for len(seen) < 3 {
		select {
		case k := <-got:
			seen[k] = true
		case <-ctx.Done():
			t.Fatalf("got %d of 3 tasks before the deadline, want all", len(seen))
		}
	}
}

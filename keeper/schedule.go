package keeper

import (
	"context"
	"sync"
	"time"
)

// dbKey names a tenant db.
type dbKey struct {
	tenant string
	index  int
}

// Why a db is measured. Lower values go first.
const (
	reasonWritten = "written"
	reasonSweep   = "sweep"
)

// task is one pending measurement.
type task struct {
	key    dbKey
	reason string
	due    time.Time
}

func priority(reason string) int {
	if reason == reasonWritten {
		return 0
	}
	return 1
}

// schedule coalesces measurement requests: a db has at most one pending
// task and one measurement in flight, and is measured at most once per gap.
// Writes reported while a db is pending or being measured fold into the next
// measurement, so a busy db costs one measurement per gap however many
// heartbeats name it. Written dbs go before swept ones.
type schedule struct {
	gap  time.Duration
	wake chan struct{}

	mu       sync.Mutex
	tasks    map[dbKey]*task
	inflight map[dbKey]bool
	last     map[dbKey]time.Time
}

func newSchedule(gap time.Duration) *schedule {
	return &schedule{gap: gap, wake: make(chan struct{}, 1),
		tasks: map[dbKey]*task{}, inflight: map[dbKey]bool{}, last: map[dbKey]time.Time{}}
}

// add asks for a measurement of key.
func (s *schedule) add(key dbKey, reason string, now time.Time) {
	s.mu.Lock()
	due := now
	if l, ok := s.last[key]; ok && l.Add(s.gap).After(due) {
		due = l.Add(s.gap)
	}
	if t, ok := s.tasks[key]; ok {
		if priority(reason) < priority(t.reason) {
			t.reason = reason
		}
		if due.Before(t.due) {
			t.due = due
		}
	} else {
		s.tasks[key] = &task{key: key, reason: reason, due: due}
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the task to run now: among the due tasks of dbs
// not in flight, the most urgent reason, then the earliest due. With none
// due it returns how long until one is (0: nothing pending).
func (s *schedule) take(now time.Time) (task, time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *task
	var wait time.Duration
	for k, t := range s.tasks {
		if s.inflight[k] {
			continue
		}
		if t.due.After(now) {
			if d := t.due.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if best == nil || priority(t.reason) < priority(best.reason) ||
			(priority(t.reason) == priority(best.reason) && t.due.Before(best.due)) {
			best = t
		}
	}
	if best == nil {
		return task{}, wait, false
	}
	delete(s.tasks, best.key)
	s.inflight[best.key] = true
	return *best, 0, true
}

// done ends key's measurement; a task added meanwhile waits for the gap.
func (s *schedule) done(key dbKey, now time.Time) {
	s.mu.Lock()
	delete(s.inflight, key)
	s.last[key] = now
	if t, ok := s.tasks[key]; ok && t.due.Before(now.Add(s.gap)) {
		t.due = now.Add(s.gap)
	}
	// Forget dbs measured long ago, so dropped dbs do not pile up.
	for k, l := range s.last {
		if now.Sub(l) > s.gap && s.tasks[k] == nil && !s.inflight[k] {
			delete(s.last, k)
		}
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next blocks until a task is due and returns it; false once ctx ends.
func (s *schedule) next(ctx context.Context) (task, bool) {
	for {
		t, wait, ok := s.take(time.Now())
		if ok {
			// The wake-up may have been meant for more tasks than this one:
			// pass it on to another waiting worker.
			select {
			case s.wake <- struct{}{}:
			default:
			}
			return t, true
		}
		var timer *time.Timer
		var fire <-chan time.Time
		if wait > 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return task{}, false
		}
	}
}

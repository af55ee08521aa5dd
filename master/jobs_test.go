package master

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

// TestJobSteps checks the master's step table against the job protocol:
// every step the master owns has a handler, and every handler is a step of
// its kind (a master step, or a keeper step it watches). keeper's
// TestJobSteps checks the keeper's side, so a step on one side only fails.
func TestJobSteps(t *testing.T) {
	m, err := New(DefaultConfig(), nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	kinds := metadb.JobKinds()
	if len(m.steps) != len(kinds) {
		t.Errorf("master handles %d job kinds, the protocol has %d (%v)", len(m.steps), len(kinds), kinds)
	}
	for _, kind := range kinds {
		handlers := m.steps[kind]
		for _, s := range metadb.Steps(kind) {
			if s.Owner == metadb.ByMaster && handlers[s.Name] == nil {
				t.Errorf("%s: master step %s has no handler", kind, s.Name)
			}
		}
		for name := range handlers {
			if _, _, ok := metadb.StepOf(kind, name); !ok {
				t.Errorf("%s: the master handles step %s, which the protocol does not have", kind, name)
			}
		}
	}
	for kind := range m.steps {
		if metadb.Steps(kind) == nil {
			t.Errorf("the master handles job kind %s, which the protocol does not have", kind)
		}
	}
}

func TestNextAction(t *testing.T) {
	run := func(context.Context, *metadb.Fence, *metadb.Job) (metadb.Step, error) { return "", nil }
	handlers := map[metadb.Step]stepFunc{metadb.StepReserve: run, metadb.StepCatchup: run}
	tests := []struct {
		name  string
		state string
		step  metadb.Step
		want  action
	}{
		{"master step", metadb.JobRunning, metadb.StepReserve, actRun},
		{"keeper step", metadb.JobRunning, metadb.StepCopy, actPoll},
		{"watched keeper step", metadb.JobRunning, metadb.StepCatchup, actRun},
		{"master step without handler", metadb.JobRunning, metadb.StepHold, actFail},
		{"step of another kind", metadb.JobRunning, metadb.StepAttach, actFail},
		{"unknown step", metadb.JobRunning, "bogus", actFail},
		{"finished", metadb.JobDone, metadb.StepDone, actStop},
		{"failed", metadb.JobFailed, metadb.StepCopy, actStop},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := &metadb.Job{Kind: metadb.JobResize, State: tc.state, Step: tc.step}
			if got := nextAction(j, handlers); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		name string
		next metadb.Step
		err  error
		want outcome
	}{
		{"next step", metadb.StepHold, nil, outRecord},
		{"last step", metadb.StepDone, nil, outRecord},
		{"ended by the step", "", nil, outEnded},
		{"waiting", "", fmt.Errorf("%w for proxies", errWait), outWait},
		{"deposed", "", fmt.Errorf("update: %w", metadb.ErrNotLeader), outDeposed},
		{"failed", "", errors.New("connection refused"), outRetry},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := outcomeOf(tc.next, tc.err); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

package metadb

import (
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestJobSpec(t *testing.T) {
	for _, kind := range JobKinds() {
		steps := Steps(kind)
		if len(steps) == 0 {
			t.Errorf("%s has no steps", kind)
		}
		seen := map[Step]bool{}
		for _, s := range steps {
			if seen[s.Name] {
				t.Errorf("%s: step %s twice", kind, s.Name)
			}
			seen[s.Name] = true
			if s.Owner != ByMaster && s.Owner != ByKeeper {
				t.Errorf("%s: step %s has no owner", kind, s.Name)
			}
			if s.Name == StepDone {
				t.Errorf("%s: %s is the end, not a step", kind, s.Name)
			}
		}
	}
}

func TestProgress(t *testing.T) {
	tests := []struct {
		name string
		kind JobKind
		step Step
		frac float64
		want float64
	}{
		{"first step", JobResize, StepReserve, 0, 0},
		{"keeper's copy half done", JobResize, StepCopy, 0.5, 1.5 / 7},
		{"copy overshoots", JobResize, StepCopy, 3, 2.0 / 7},
		{"at hold", JobResize, StepHold, 0, 2.0 / 7},
		{"last step", JobDrop, StepFree, 0, 3.0 / 4},
		{"finished", JobCreate, StepDone, 0, 1},
		{"step of another kind", JobCreate, StepCopy, 0, 0},
		{"unknown kind", "bogus", StepFlush, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Progress(tc.kind, tc.step, tc.frac); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestJobAdvance(t *testing.T) {
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		job       Job
		from      Step
		next      Step
		wantOK    bool
		wantState string
		wantStep  Step
		wantProg  float64
	}{
		{"next step", Job{Kind: JobResize, State: JobRunning, Step: StepCopy, Error: "earlier"}, StepCopy, StepHold,
			true, JobRunning, StepHold, 2.0 / 7},
		{"back to an earlier step", Job{Kind: JobResize, State: JobRunning, Step: StepSwitch}, StepSwitch, StepHold,
			true, JobRunning, StepHold, 2.0 / 7},
		{"last step ends the job", Job{Kind: JobCreate, State: JobRunning, Step: StepRoute}, StepRoute, StepDone,
			true, JobDone, StepDone, 1},
		{"recorded by someone else", Job{Kind: JobResize, State: JobRunning, Step: StepHold, Progress: 2.0 / 7}, StepCopy, StepHold,
			false, JobRunning, StepHold, 2.0 / 7},
		{"ended meanwhile", Job{Kind: JobResize, State: JobFailed, Step: StepCopy}, StepCopy, StepHold,
			false, JobFailed, StepCopy, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			j := tc.job
			logs := len(j.Log)
			ok := j.Advance(tc.from, tc.next, "master/m1", at)
			if ok != tc.wantOK || j.State != tc.wantState || j.Step != tc.wantStep || math.Abs(j.Progress-tc.wantProg) > 1e-9 {
				t.Errorf("got ok %v state %s step %s progress %v, want %v %s %s %v",
					ok, j.State, j.Step, j.Progress, tc.wantOK, tc.wantState, tc.wantStep, tc.wantProg)
			}
			if !ok {
				if len(j.Log) != logs {
					t.Errorf("log grew to %v on a refused advance", j.Log)
				}
				return
			}
			if last := j.Log[len(j.Log)-1]; last.Step != tc.from || last.By != "master/m1" || last.At != Timestamp(at) || j.Error != "" {
				t.Errorf("got log entry %+v and error %q, want %s by master/m1 at %s, no error", last, j.Error, tc.from, Timestamp(at))
			}
		})
	}
}

// TestNoBareJobNames keeps this file's names the only spelling of the job
// protocol: outside it, code that sets or compares a job's step or reads
// its data names a constant. It looks for a protocol name quoted in the
// usual shapes (a Step field set or compared, a Data index) in every Go
// file of the module except the proxy's, which knows nothing of jobs.
// Tests may still make up steps of made-up kinds.
func TestNoBareJobNames(t *testing.T) {
	steps, names := map[string]bool{}, map[string]bool{}
	for _, kind := range JobKinds() {
		for _, s := range Steps(kind) {
			steps[string(s.Name)], names[string(s.Name)] = true, true
		}
	}
	for _, n := range []string{string(StepDone), string(StepClaim), string(StepRequested), string(StepPromote), string(StepDropSpare),
		ResizeToSize, ResizeToQuota, ResizeToPair, ResizeToSlot, ResizeBytesCopied, ResizeBytesTotal, ResizeKeysCopied,
		ResizeKeysTotal, ResizeCopyMillis, ResizeNotifyBefore, ReplaceSpare, ReplaceMaster, ReplaceOldMaster, ReplaceReason,
		ReplaceOffset, ReplaceMasterOffset, ExportObject, ExportSize, ExportSHA256, ExportDeletedAt,
		RestoreObject, RestoreFrom, RestoreExport, RestoreFileBytes, RestoreUsedBytes, RestoreIgnoredKeys, RestoreRefusal,
		RestoreFailure} {
		names[n] = true
	}
	// A Step field or a Data index holds a protocol name; a return or a
	// case may hold any string, so there only the steps' own names count.
	field := regexp.MustCompile(`(?:Step(?::| ==| !=| =)|Data\[) *"([a-z_]+)"`)
	stepLike := regexp.MustCompile(`(?:return|case) *"([a-z_]+)"`)
	root := ".."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "proxy" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, ".pb.go") || filepath.Base(path) == "jobspec.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			for _, m := range field.FindAllStringSubmatch(line, -1) {
				if names[m[1]] {
					t.Errorf("%s:%d: job name %q spelt out; use metadb's constant: %s", path, i+1, m[1], strings.TrimSpace(line))
				}
			}
			for _, m := range stepLike.FindAllStringSubmatch(line, -1) {
				if steps[m[1]] {
					t.Errorf("%s:%d: step %q spelt out; use metadb's constant: %s", path, i+1, m[1], strings.TrimSpace(line))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

package metadb

import (
	"slices"
	"time"
)

// This file is the job protocol: every job kind, its steps in order with
// the component that performs each, and the names of the fields jobs keep
// in Job.Data. It is the one place these names are written; the master's
// and the keeper's step tables are checked against it by their tests.
//
//	kind             steps (owner)
//	create           flush (master) → route (master)
//	drop             unroute (master) → wait_acks (master) → flush (master) → free (master)
//	resize           reserve (master) → copy (keeper) → hold (master) → catchup (keeper)
//	                 → switch (master) → flush_old (master) → free_old (master)
//	replace_replica  take_spare (master) → attach (keeper) → record (master)
//	drain            plan (master) → move (master) → mark_drained (master)
//	rebalance        plan (master) → move (master)
//	import           readonly (master) → sync (keeper) → cutover (keeper) → release (master)
//	restore          check (keeper) → readonly (master) → load (keeper) → release (master)
//	export           dump (keeper)
//
// A finished job is at step done. A step's handler returns the next step,
// which is usually the following one in the list; a few go back or skip
// (a resize whose hold lapsed goes back to hold; a drop already unrouted
// skips to flush; a cancelled import skips from readonly or sync to
// release; a restore whose file is refused at check ends failed there,
// before anything was written).

// JobKind names what a job does; it is stored in Job.Kind.
type JobKind string

// Job kinds.
const (
	JobCreate    JobKind = "create"
	JobDrop      JobKind = "drop"
	JobResize    JobKind = "resize"
	JobReplace   JobKind = "replace_replica" // attach a spare as a pair's new replica
	JobDrain     JobKind = "drain"           // move every db off a pair, one resize at a time
	JobRebalance JobKind = "rebalance"       // even a pool's used bytes, one resize at a time
	JobImport    JobKind = "import"          // copy a live outside Redis db into a tenant db, then cut over
	JobExport    JobKind = "export"          // write a db's keys, read from its pair's replica, as an RDB file in the object store
	JobRestore   JobKind = "restore"         // replace a tenant db's content with an RDB file (an export or an upload)
)

// Job states.
const (
	JobRunning = "running"
	JobDone    = "done"
	JobFailed  = "failed"
)

// Step names one step of a job; it is stored in Job.Step and JobStep.Step.
type Step string

// Steps. A name may serve several kinds (create and drop both flush).
const (
	StepFlush     Step = "flush"        // create, drop: FLUSHDB the slot
	StepRoute     Step = "route"        // create: publish the route
	StepUnroute   Step = "unroute"      // drop: remove the route
	StepWaitAcks  Step = "wait_acks"    // drop: every live proxy applied the unroute
	StepFree      Step = "free"         // drop: delete the db, free the slot
	StepReserve   Step = "reserve"      // resize: claim the target slot
	StepCopy      Step = "copy"         // resize: copy the data online, keep it in step
	StepHold      Step = "hold"         // resize: proxies hold the db's writes
	StepCatchup   Step = "catchup"      // resize: last changes applied, copy verified
	StepSwitch    Step = "switch"       // resize: route to the new slot, release the hold
	StepFlushOld  Step = "flush_old"    // resize: FLUSHDB the old slot
	StepFreeOld   Step = "free_old"     // resize: free the old slot
	StepTakeSpare Step = "take_spare"   // replace: take a spare from the pool
	StepAttach    Step = "attach"       // replace: the spare replicates the new master
	StepRecord    Step = "record"       // replace: the spare is the pair's replica
	StepPlan      Step = "plan"         // drain: list the pair's dbs
	StepMove      Step = "move"         // drain: move each db to another pair with a same-size resize
	StepMarkDrain Step = "mark_drained" // drain: the pair is empty and drained
	StepReadOnly  Step = "readonly"     // import, restore: the db refuses writes, every proxy acknowledged
	StepSync      Step = "sync"         // import: copy the source and keep the copy in step
	StepCutover   Step = "cutover"      // import: last changes applied, copy verified, replica has it
	StepRelease   Step = "release"      // import, restore: the db takes writes again; an import's source password is forgotten
	StepCheck     Step = "check"        // restore: the file loads in a scratch server and its data fits the db
	StepLoad      Step = "load"         // restore: the db's slot flushed and filled from the file, replica confirmed
	StepDump      Step = "dump"         // export: write the db as an RDB file and store it

	// StepDone is the step of a finished job.
	StepDone Step = "done"
	// Names that only job logs show, for what happened outside the steps.
	StepClaim     Step = "claim"      // create: the slot claim that recorded the job
	StepRequested Step = "requested"  // drop: the tenant's request
	StepPromote   Step = "promote"    // replace: the keeper promoted the replica
	StepDropSpare Step = "drop_spare" // replace: the spare did not answer and was put aside
)

// Owner is the component that performs a step.
type Owner uint8

// Owners.
const (
	ByMaster Owner = iota + 1 // the leading master
	ByKeeper                  // the keeper watching the job's pair
)

func (o Owner) String() string {
	switch o {
	case ByMaster:
		return "master"
	case ByKeeper:
		return "keeper"
	}
	return "nobody"
}

// StepSpec is one step of a job kind and who performs it.
type StepSpec struct {
	Name  Step
	Owner Owner
}

var jobSteps = map[JobKind][]StepSpec{
	JobCreate: {{StepFlush, ByMaster}, {StepRoute, ByMaster}},
	JobDrop:   {{StepUnroute, ByMaster}, {StepWaitAcks, ByMaster}, {StepFlush, ByMaster}, {StepFree, ByMaster}},
	JobResize: {{StepReserve, ByMaster}, {StepCopy, ByKeeper}, {StepHold, ByMaster}, {StepCatchup, ByKeeper},
		{StepSwitch, ByMaster}, {StepFlushOld, ByMaster}, {StepFreeOld, ByMaster}},
	JobReplace:   {{StepTakeSpare, ByMaster}, {StepAttach, ByKeeper}, {StepRecord, ByMaster}},
	JobDrain:     {{StepPlan, ByMaster}, {StepMove, ByMaster}, {StepMarkDrain, ByMaster}},
	JobRebalance: {{StepPlan, ByMaster}, {StepMove, ByMaster}},
	JobImport:    {{StepReadOnly, ByMaster}, {StepSync, ByKeeper}, {StepCutover, ByKeeper}, {StepRelease, ByMaster}},
	JobRestore:   {{StepCheck, ByKeeper}, {StepReadOnly, ByMaster}, {StepLoad, ByKeeper}, {StepRelease, ByMaster}},
	JobExport:    {{StepDump, ByKeeper}},
}

// JobKinds lists every job kind, sorted.
func JobKinds() []JobKind {
	out := make([]JobKind, 0, len(jobSteps))
	for k := range jobSteps {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Steps lists the steps of kind in order; nil for an unknown kind.
func Steps(kind JobKind) []StepSpec { return slices.Clone(jobSteps[kind]) }

// StepOf finds step in kind's list; ok is false when kind has no such step.
func StepOf(kind JobKind, step Step) (spec StepSpec, index int, ok bool) {
	for i, s := range jobSteps[kind] {
		if s.Name == step {
			return s, i, true
		}
	}
	return StepSpec{}, -1, false
}

// Progress is the share of kind's steps done when a job is at step, with
// frac (0 to 1) of step itself done; 1 at StepDone, 0 for a step kind does
// not have.
func Progress(kind JobKind, step Step, frac float64) float64 {
	if step == StepDone {
		return 1
	}
	_, i, ok := StepOf(kind, step)
	if !ok {
		return 0
	}
	return (float64(i) + min(max(frac, 0), 1)) / float64(len(jobSteps[kind]))
}

// Advance records on j that step from is finished by by at at and that the
// job goes on at next (StepDone ends it as done), with the progress next
// stands for. It changes nothing and reports false when j is no longer
// running at from (someone recorded the step already, or the job ended).
func (j *Job) Advance(from, next Step, by string, at time.Time) bool {
	if j.State != JobRunning || j.Step != from {
		return false
	}
	j.Log = append(j.Log, JobStep{Step: from, At: Timestamp(at), By: by})
	j.Error = ""
	if next == StepDone {
		j.State = JobDone
	}
	j.Step, j.Progress = next, Progress(j.Kind, next, 0)
	return true
}

// finish ends j as done after step from, performed by by at ts (a
// record time), inside the transaction that makes the step's effect.
func (j *Job) finish(from Step, by, ts string) {
	j.State, j.Step, j.Progress, j.Updated, j.Error = JobDone, StepDone, 1, ts, ""
	j.Log = append(j.Log, JobStep{Step: from, At: ts, By: by})
}

// Fields jobs keep in Job.Data.
const (
	// resize
	ResizeToSize       = "to_size"       // target size class, "256M"
	ResizeToQuota      = "to_quota"      // target quota in bytes
	ResizeToPair       = "to_pair"       // reserved target pair
	ResizeToSlot       = "to_slot"       // reserved target db number
	ResizeBytesCopied  = "bytes_copied"  // estimate, for progress bars
	ResizeBytesTotal   = "bytes_total"   // estimate of the whole db
	ResizeKeysCopied   = "keys_copied"   // keys copied so far
	ResizeKeysTotal    = "keys_total"    // keys in the source db when the copy began
	ResizeCopyMillis   = "copy_ms"       // how long the online copy took
	ResizeNotifyBefore = "notify_before" // the source's notify-keyspace-events before the first copy
	ResizeWantPair     = "want_pair"     // a rebalance's move: the pair the target slot must be on

	// replace_replica
	ReplaceSpare        = "spare"         // the spare being attached
	ReplaceMaster       = "master"        // the pair's master (the promoted replica) when the job began
	ReplaceOldMaster    = "old_master"    // the master that failed
	ReplaceReason       = "reason"        // why the keeper failed the pair over
	ReplaceOffset       = "offset"        // the promoted replica's replication offset
	ReplaceMasterOffset = "master_offset" // the failed master's last known offset
	ReplaceNoSpareAt    = "no_spare_at"   // when take_spare first found the pool empty (audited once: spares.empty)

	// drain, rebalance
	DrainPlan   = "plan"      // the dbs to move, "<tenant>/<index>" (a rebalance's: "<tenant>/<index>><pair>") comma-separated
	DrainTotal  = "dbs_total" // how many dbs the plan holds
	DrainMoved  = "dbs_moved" // how many of them are done (moved, or for a rebalance also skipped)
	DrainMoving = "moving"    // the resize job moving a db now
	// rebalance
	RebalanceSize = "size" // the pool

	// import (its progress also uses ResizeKeysCopied and ResizeKeysTotal)
	ImportSource    = "source"     // the source as redis://host:port, never with credentials
	ImportUser      = "user"       // the source's ACL user, "" for the default user
	ImportPassword  = "password"   // the source's password: kept for the job's life, deleted when it ends, never shown
	ImportSourceDB  = "source_db"  // the source's db number
	ImportDirty     = "dirty"      // keys changed on the source and not yet applied
	ImportLastApply = "last_apply" // unix ms of the last change applied (for the lag)
	ImportInStep    = "in_step"    // "true" once a full pass is done and the dirty keys are few
	ImportCutoverAt = "cutover_at" // when the tenant asked for the cut-over (a record time)
	ImportCancelAt  = "cancel_at"  // when the tenant cancelled (a record time)

	// export (its progress also uses ResizeKeysCopied, ResizeKeysTotal and
	// ResizeBytesCopied, the file's bytes written so far; ResizeCopyMillis
	// is how long the finished dump took)
	ExportObject    = "object"     // the file's object name in the store, "exports/<tenant>/<job id>.rdb"
	ExportSize      = "bytes"      // the finished file's bytes
	ExportSHA256    = "sha256"     // the finished file's SHA-256, hex
	ExportDeletedAt = "deleted_at" // when the tenant deleted the export (a record time); a dump in flight stops

	// restore (its progress also uses ResizeBytesCopied, ResizeBytesTotal,
	// ResizeKeysCopied and ResizeKeysTotal)
	RestoreObject      = "object"       // the RDB file's object store name
	RestoreFrom        = "from"         // RestoreFromExport or RestoreFromUpload
	RestoreExport      = "export"       // the export job whose file it is (from an export)
	RestoreFileBytes   = "file_bytes"   // the file's size
	RestoreUsedBytes   = "used_bytes"   // what db 0 of the file takes in memory, measured at check
	RestoreIgnoredKeys = "ignored_keys" // keys of the file's other dbs, which a restore leaves out
	RestoreRefusal     = "refusal"      // why check refused the file: RestoreTooBig or RestoreCorrupt
	RestoreFailure     = "failure"      // why load gave up (its file is gone): release then ends the job failed with it
)

// Values of RestoreFrom and RestoreRefusal.
const (
	RestoreFromExport = "export"
	RestoreFromUpload = "upload"
	RestoreTooBig     = "too_big" // db 0 of the file takes more than the db's size
	RestoreCorrupt    = "corrupt" // the scratch server would not load the file
)

package master

import (
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestRestoreMasterSteps: the master waits while the keeper checks; once
// check is recorded it makes the db read-only, acknowledged by the proxy,
// and moves to load; at release it gives the db its writes back and ends
// the job done, or failed with the load's reason when the load gave up.
func TestRestoreMasterSteps(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	proxy := metadb.Member{ID: "px1", Addr: "127.0.0.1:7001"}
	ack := func() {
		v, _ := c.store.Version(ctx)
		proxy.AppliedVersion = v
		if err := c.store.Heartbeat(ctx, metadb.KindProxy, proxy, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	ack()
	startMaster(t, c.store, "m1")
	db, create, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "job-create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, create.ID).State == metadb.JobDone })

	for _, tc := range []struct {
		name, failure, want string
	}{
		{"loaded", "", metadb.JobDone},
		{"file deleted during the load", "the RDB file was deleted", metadb.JobFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "rst-" + tc.want
			if _, err := c.store.StartRestore(ctx, "acme", db.Index, id, map[string]string{metadb.RestoreFrom: metadb.RestoreFromUpload}); err != nil {
				t.Fatal(err)
			}
			// The keeper's check.
			if _, err := c.store.UpdateJob(ctx, nil, id, func(j *metadb.Job) error {
				j.Advance(metadb.StepCheck, metadb.StepReadOnly, "keeper/k1", time.Now())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			redistest.WaitFor(t, 5*time.Second, "the db read-only", func() bool {
				d, _ := c.store.DB(ctx, "acme", db.Index)
				return d.ReadOnly == metadb.ReadOnlyRestoring
			})
			if j := jobState(t, c.store, id); j.Step != metadb.StepReadOnly {
				t.Fatalf("step %s before the proxy acknowledged, want readonly", j.Step)
			}
			ack()
			redistest.WaitFor(t, 5*time.Second, "load", func() bool { return jobState(t, c.store, id).Step == metadb.StepLoad })
			// The keeper's load.
			if _, err := c.store.UpdateJob(ctx, nil, id, func(j *metadb.Job) error {
				if tc.failure != "" {
					j.Data[metadb.RestoreFailure] = tc.failure
				}
				j.Advance(metadb.StepLoad, metadb.StepRelease, "keeper/k1", time.Now())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			redistest.WaitFor(t, 5*time.Second, "the job to end", func() bool { return jobState(t, c.store, id).State != metadb.JobRunning })
			j := jobState(t, c.store, id)
			if j.State != tc.want || j.Error != tc.failure {
				t.Fatalf("job %s (%q), want %s (%q)", j.State, j.Error, tc.want, tc.failure)
			}
			if d, _ := c.store.DB(ctx, "acme", db.Index); d.ReadOnly != "" {
				t.Fatalf("db still read-only: %q", d.ReadOnly)
			}
		})
	}
}

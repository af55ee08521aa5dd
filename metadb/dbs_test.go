package metadb

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
)

// TestClaimDBConcurrent runs 1000 concurrent signups from 50 tenants against
// 4 pairs with 64 slots in total, the way the API claims: try the pairs in
// turn and give up when every pair answers pools.ErrNoCapacity.
func TestClaimDBConcurrent(t *testing.T) {
	const (
		tenants = 50
		calls   = 1000
		pairs   = 4
		perPair = 16
		slots   = pairs * perPair
	)
	tests := []struct {
		name  string
		limit int
		want  int // successful claims
	}{
		{name: "pool runs out", limit: 1000, want: slots},
		{name: "tenant limit binds", limit: 1, want: tenants},
		{name: "both bind", limit: 2, want: slots},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newStore(t)
			ctx := testCtx(t)
			var ps []*Pair
			for range pairs {
				ps = append(ps, addPair(t, s, "64M", perPair))
			}
			for i := range tenants {
				mustTenant(t, s, fmt.Sprintf("t%02d", i))
			}

			type result struct {
				tenant string
				db     *DB
				job    *Job
				err    error
			}
			results := make([]result, calls)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range calls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					tenant := fmt.Sprintf("t%02d", i%tenants)
					r := result{tenant: tenant, err: pools.ErrNoCapacity}
					for k := range pairs {
						p := ps[(i+k)%pairs]
						r.db, r.job, r.err = s.ClaimDB(ctx, tenant, p, WriteConfirmed, 64<<20, tc.limit, fmt.Sprintf("job%04d", i))
						if !errors.Is(r.err, pools.ErrNoCapacity) {
							break
						}
					}
					results[i] = r
				}()
			}
			close(start)
			wg.Wait()

			ok := 0
			perTenant := map[string]int{}
			limited := map[string]bool{}
			slotOwner := map[string]string{} // "pair/slot" -> "tenant/index"
			for i, r := range results {
				switch {
				case r.err == nil:
					ok++
					perTenant[r.tenant]++
					k := fmt.Sprintf("%s/%d", r.db.Pair, r.db.SlotDB)
					if prev, dup := slotOwner[k]; dup {
						t.Errorf("slot %s claimed twice: by %s and %s/%d", k, prev, r.tenant, r.db.Index)
					}
					slotOwner[k] = fmt.Sprintf("%s/%d", r.tenant, r.db.Index)
					if r.job.Pair != r.db.Pair || r.job.SlotDB != r.db.SlotDB || r.job.Index != r.db.Index {
						t.Errorf("call %d: job slot %s/%d index %d, want %s/%d index %d", i, r.job.Pair, r.job.SlotDB, r.job.Index, r.db.Pair, r.db.SlotDB, r.db.Index)
					}
				case errors.Is(r.err, ErrTenantLimit):
					limited[r.tenant] = true
				case errors.Is(r.err, pools.ErrNoCapacity):
					if tc.want != slots {
						t.Errorf("call %d: got %v while capacity remained, want %v", i, r.err, ErrTenantLimit)
					}
				default:
					t.Errorf("call %d: got %v, want nil, %v or %v", i, r.err, pools.ErrNoCapacity, ErrTenantLimit)
				}
			}
			if ok != tc.want {
				t.Errorf("successful claims: got %d, want %d", ok, tc.want)
			}
			for tenant, n := range perTenant {
				if n > tc.limit {
					t.Errorf("tenant %s has %d dbs, want at most %d", tenant, n, tc.limit)
				}
			}
			for tenant := range limited {
				if perTenant[tenant] != tc.limit {
					t.Errorf("tenant %s refused with %v at %d dbs, want %d", tenant, ErrTenantLimit, perTenant[tenant], tc.limit)
				}
			}

			// The metadb agrees with what the callers were told.
			stored := map[string]string{}
			free := 0
			for _, p := range ps {
				owners, err := s.SlotOwners(ctx, p.ID)
				if err != nil {
					t.Fatal(err)
				}
				for slot, owner := range owners {
					stored[p.ID+"/"+slot] = owner
				}
				fs, err := s.FreeSlots(ctx, p.ID)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range fs {
					if o, taken := owners[field(f)]; taken {
						t.Errorf("pair %s slot %d is free and owned by %s", p.ID, f, o)
					}
				}
				free += len(fs)
				if len(fs)+len(owners) != perPair {
					t.Errorf("pair %s: %d free + %d owned slots, want %d", p.ID, len(fs), len(owners), perPair)
				}
			}
			if fmt.Sprint(stored) != fmt.Sprint(slotOwner) {
				t.Errorf("SlotOwners: got %v, want %v", stored, slotOwner)
			}
			if free != slots-ok {
				t.Errorf("free slots: got %d, want %d", free, slots-ok)
			}
			for i := range tenants {
				tenant := fmt.Sprintf("t%02d", i)
				dbs, err := s.DBs(ctx, tenant)
				if err != nil {
					t.Fatal(err)
				}
				if len(dbs) != perTenant[tenant] {
					t.Errorf("tenant %s: got %d dbs, want %d", tenant, len(dbs), perTenant[tenant])
				}
				for j, db := range dbs {
					if db.Index != j {
						t.Errorf("tenant %s: db #%d has index %d, want %d (indexes 0..n-1)", tenant, j, db.Index, j)
					}
					if got, want := slotOwner[fmt.Sprintf("%s/%d", db.Pair, db.SlotDB)], fmt.Sprintf("%s/%d", tenant, db.Index); got != want {
						t.Errorf("tenant %s db %d on %s/%d: slot owner got %q, want %q", tenant, db.Index, db.Pair, db.SlotDB, got, want)
					}
					if db.State != DBCreating || db.Size != "64M" || db.QuotaBytes != 64<<20 {
						t.Errorf("tenant %s db %d: got state %s size %s quota %d, want %s 64M %d", tenant, db.Index, db.State, db.Size, db.QuotaBytes, DBCreating, 64<<20)
					}
				}
			}
			active, err := s.ActiveJobs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(active) != ok {
				t.Errorf("active jobs: got %d, want %d", len(active), ok)
			}
		})
	}
}

func TestClaimDBErrors(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 2)
	mustTenant(t, s, "acme")
	tests := []struct {
		name   string
		tenant string
		limit  int
		want   error
	}{
		{name: "unknown tenant", tenant: "nobody", limit: 10, want: ErrNotFound},
		{name: "zero limit", tenant: "acme", limit: 0, want: ErrTenantLimit},
		{name: "first", tenant: "acme", limit: 10},
		{name: "second", tenant: "acme", limit: 10},
		{name: "pair full", tenant: "acme", limit: 10, want: pools.ErrNoCapacity},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.ClaimDB(ctx, tc.tenant, pair, WriteAsync, 64<<20, tc.limit, fmt.Sprintf("j%d", i))
			if !errors.Is(err, tc.want) {
				t.Fatalf("ClaimDB: got %v, want %v", err, tc.want)
			}
			if err != nil {
				if _, err := s.Job(ctx, fmt.Sprintf("j%d", i)); !errors.Is(err, ErrNotFound) {
					t.Errorf("job of a refused claim: got %v, want %v", err, ErrNotFound)
				}
			}
		})
	}
}

// TestDropRelease follows a drop from StartDrop to ReleaseSlot and checks
// that the slot is freed exactly once, however often ReleaseSlot runs.
func TestDropRelease(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 1) // one slot: a second free would be visible
	mustTenant(t, s, "acme")
	mustTenant(t, s, "beta")
	f, ok, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("acquire leader: got %v, %v, want ok", ok, err)
	}

	db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, "create1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop0"); !errors.Is(err, ErrBadState) {
		t.Fatalf("StartDrop of a db being created: got %v, want %v", err, ErrBadState)
	}
	if _, err := s.StartDrop(ctx, "acme", 7, "drop0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("StartDrop of a missing db: got %v, want %v", err, ErrNotFound)
	}
	if _, err := s.UpdateDB(ctx, f, "m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.State = DBActive
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateJob(ctx, f, "create1", func(j *Job) error { j.State = JobDone; return nil }); err != nil {
		t.Fatal(err)
	}

	job, err := s.StartDrop(ctx, "acme", db.Index, "drop1")
	if err != nil {
		t.Fatalf("StartDrop: %v", err)
	}
	if job.ID != "drop1" || job.Kind != JobDrop || job.State != JobRunning || job.Pair != pair.ID || job.SlotDB != db.SlotDB {
		t.Errorf("drop job: got %+v, want drop1 %s %s on %s/%d", job, JobDrop, JobRunning, pair.ID, db.SlotDB)
	}
	again, err := s.StartDrop(ctx, "acme", db.Index, "drop2")
	if err != nil || again.ID != "drop1" {
		t.Errorf("StartDrop again: got job %v, %v, want drop1, nil", again, err)
	}
	if _, err := s.Job(ctx, "drop2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second StartDrop recorded a job: got %v, want %v", err, ErrNotFound)
	}
	if got, _ := s.DB(ctx, "acme", db.Index); got == nil || got.State != DBDropping || got.Job != "drop1" {
		t.Errorf("db after StartDrop: got %+v, want state %s job drop1", got, DBDropping)
	}
	if !hasActiveJob(t, s, "drop1") {
		t.Errorf("drop1 not in ActiveJobs after StartDrop")
	}
	_, routes, err := s.Routes(ctx)
	if err != nil || len(routes) != 0 {
		t.Errorf("routes of a dropping db: got %v, %v, want none", routes, err)
	}

	// Two masters' worth of concurrent releases: one frees the slot.
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.ReleaseSlot(ctx, f, "drop1") }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ReleaseSlot #%d: got %v, want nil", i, err)
		}
	}
	checkFree(t, s, pair.ID, []int{db.SlotDB})
	if owners, _ := s.SlotOwners(ctx, pair.ID); len(owners) != 0 {
		t.Errorf("owners after release: got %v, want none", owners)
	}
	if _, err := s.DB(ctx, "acme", db.Index); !errors.Is(err, ErrNotFound) {
		t.Errorf("db after release: got %v, want %v", err, ErrNotFound)
	}
	done, err := s.Job(ctx, "drop1")
	if err != nil {
		t.Fatal(err)
	}
	if done.State != JobDone || done.Step != StepDone || done.Progress != 1 {
		t.Errorf("job after release: got state %s step %s progress %v, want %s done 1", done.State, done.Step, done.Progress, JobDone)
	}
	if n := countSteps(done, StepFree); n != 1 {
		t.Errorf("job log has %d free steps, want 1: %+v", n, done.Log)
	}
	if hasActiveJob(t, s, "drop1") {
		t.Errorf("drop1 still in ActiveJobs after release")
	}

	// The slot goes to someone else; a late repeat of the release must not
	// free it from under them.
	other, _, err := s.ClaimDB(ctx, "beta", pair, WriteConfirmed, 64<<20, 8, "create2")
	if err != nil {
		t.Fatalf("claim the freed slot: %v", err)
	}
	if other.SlotDB != db.SlotDB {
		t.Fatalf("claimed slot %d, want the freed %d", other.SlotDB, db.SlotDB)
	}
	if err := s.ReleaseSlot(ctx, f, "drop1"); err != nil {
		t.Fatalf("late ReleaseSlot: %v", err)
	}
	checkFree(t, s, pair.ID, nil)
	owners, _ := s.SlotOwners(ctx, pair.ID)
	if got, want := owners[field(db.SlotDB)], "beta/0"; got != want {
		t.Errorf("owner after a late release: got %q, want %q", got, want)
	}
	if _, err := s.DB(ctx, "beta", 0); err != nil {
		t.Errorf("beta's db after a late release: got %v, want nil", err)
	}
	if err := s.ReleaseSlot(ctx, f, "nojob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReleaseSlot of an unknown job: got %v, want %v", err, ErrNotFound)
	}
}

// TestReleaseSlotWithoutFence: the fence is optional everywhere in Store;
// releasing without one must work, not panic.
func TestReleaseSlotWithoutFence(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 1)
	mustTenant(t, s, "acme")
	db := mustActiveDB(t, s, "acme", pair, "create1")
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseSlot(ctx, nil, "drop1"); err != nil {
		t.Fatalf("ReleaseSlot(nil fence): got %v, want nil", err)
	}
	checkFree(t, s, pair.ID, []int{db.SlotDB})
}

// TestRoutes: the snapshot holds active and resizing dbs with their pair's
// addresses, and the version it was read at.
func TestRoutes(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 4)
	mustTenant(t, s, "acme")
	a := mustActiveDB(t, s, "acme", pair, "c0")
	b := mustActiveDB(t, s, "acme", pair, "c1")
	if _, _, err := s.ClaimDB(ctx, "acme", pair, WriteAsync, 64<<20, 8, "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateDB(ctx, nil, "test", "acme", b.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.State, d.WriteMode, d.Banned = DBResizing, WriteAsync, true
		return []*buspb.Envelope{{Payload: &buspb.Envelope_WriteBan{WriteBan: &buspb.WriteBan{Tenant: "acme", Index: uint32(b.Index), Banned: true}}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	wantV, _ := s.Version(ctx)
	v, routes, err := s.Routes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v != wantV {
		t.Errorf("routes version: got %d, want %d", v, wantV)
	}
	sort.Slice(routes, func(i, j int) bool { return routes[i].Index < routes[j].Index })
	var got []string
	for _, r := range routes {
		got = append(got, fmt.Sprintf("%s/%d %s %s %s db%d %s banned=%v", r.Tenant, r.Index, r.Pair, r.Master, r.Replica, r.Db, r.WriteMode, r.Banned))
	}
	want := []string{
		fmt.Sprintf("acme/%d %s %s %s db%d WRITE_MODE_CONFIRMED banned=false", a.Index, pair.ID, pair.Master, pair.Replica, a.SlotDB),
		fmt.Sprintf("acme/%d %s %s %s db%d WRITE_MODE_ASYNC banned=true", b.Index, pair.ID, pair.Master, pair.Replica, b.SlotDB),
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("routes: got %v, want %v", got, want)
	}
}

func checkFree(t *testing.T, s *Store, pair string, want []int) {
	t.Helper()
	got, err := s.FreeSlots(t.Context(), pair)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(append([]int{}, want...)) {
		t.Errorf("free slots of %s: got %v, want %v", pair, got, want)
	}
}

func hasActiveJob(t *testing.T, s *Store, id string) bool {
	t.Helper()
	jobs, err := s.ActiveJobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.ID == id {
			return true
		}
	}
	return false
}

func countSteps(j *Job, step Step) int {
	n := 0
	for _, s := range j.Log {
		if s.Step == step {
			n++
		}
	}
	return n
}

// TestClaimDBRecord: what ClaimDB returns is what it stored (the script
// re-encodes the records in Lua), and the create job is active.
func TestClaimDBRecord(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "1G", 3)
	mustTenant(t, s, "acme")
	for i := range 3 {
		db, job, err := s.ClaimDB(ctx, "acme", pair, WriteAsync, 1<<30, 8, fmt.Sprintf("c%d", i))
		if err != nil {
			t.Fatal(err)
		}
		stored, err := s.DB(ctx, "acme", db.Index)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", stored) != fmt.Sprintf("%+v", db) {
			t.Errorf("stored db: got %+v, want %+v", stored, db)
		}
		storedJob, err := s.Job(ctx, job.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", storedJob) != fmt.Sprintf("%+v", job) {
			t.Errorf("stored job: got %+v, want %+v", storedJob, job)
		}
		if db.Index != i || db.QuotaBytes != 1<<30 || db.Size != "1G" || db.WriteMode != WriteAsync || job.Kind != JobCreate || job.State != JobRunning {
			t.Errorf("claim %d: got db %+v job %+v", i, db, job)
		}
		if !hasActiveJob(t, s, job.ID) {
			t.Errorf("create job %s not active", job.ID)
		}
	}
}

package tenantapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
	tenantapi "github.com/granary-db/granary/tenant-api"
)

// TestTenantDBLifecycle walks the contract with no master running: signup,
// create (answered "creating" with its job), list, get, the master's part
// done by hand in metadb, write-mode change announced on the bus, resize
// refused as not built, drop (202, job recorded, db dropping).
func TestTenantDBLifecycle(t *testing.T) {
	h := newHarness(t, nil)
	ctx := context.Background()
	m, r := startPair(t, "2gb", 16)
	p := h.addPair("64m", m, r, "0-15")
	if p.ID != "p1" || p.Size != "64M" || p.DBs != 16 || p.Free != 16 || p.Master != m.Addr || p.Replica != r.Addr {
		t.Fatalf("pair: got %+v, want p1 64M with 16 free dbs on %s/%s", p, m.Addr, r.Addr)
	}

	acme := h.signup("acme")
	t.Run("signup", func(t *testing.T) {
		if acme.Tenant != "acme" || acme.User != "acme" {
			t.Fatalf("tenant/user: got %q/%q, want acme/acme", acme.Tenant, acme.User)
		}
		if !strings.HasPrefix(acme.Token, "gt_") || len(acme.Token) != 3+43 || len(acme.Password) != 43 {
			t.Fatalf("secrets: got token %q password %q, want gt_+43 and 43 base64url chars", acme.Token, acme.Password)
		}
		tn, err := h.store.Tenant(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		if tn.TokenHash != metadb.HashSecret(acme.Token) || tn.PasswordHash != metadb.HashSecret(acme.Password) {
			t.Fatalf("stored hashes do not match the secrets handed out")
		}
		for k, v := range h.snapshot() {
			if strings.Contains(v, acme.Token) || strings.Contains(v, acme.Password) {
				t.Fatalf("metadb key %s holds a secret in clear", k)
			}
		}
	})

	var created dbReply
	t.Run("create answers creating with its job", func(t *testing.T) {
		rep := h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "64M"})
		rep.want(t, http.StatusCreated)
		rep.decode(t, &created)
		want := dbReply{Index: 0, Size: "64M", State: "creating", WriteMode: "confirmed", QuotaBytes: pools.Size64M.Bytes(),
			Slot: slotReply{Pair: "p1", DB: created.Slot.DB}, Job: created.Job, Created: created.Created}
		if created != want || created.Job == "" || created.Created == "" {
			t.Fatalf("db: got %+v, want %+v with a job and a creation time", created, want)
		}
		var job jobReply
		rep = h.do("GET", "/v1/jobs/"+created.Job, acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &job)
		if job.ID != created.Job || job.Kind != "create" || job.State != "running" || job.Tenant != "acme" || job.Index != 0 {
			t.Fatalf("job: got %+v, want a running create job of acme/0", job)
		}
	})

	t.Run("list and get", func(t *testing.T) {
		var list []dbReply
		rep := h.do("GET", "/v1/dbs", acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &list)
		if len(list) != 1 || list[0] != created {
			t.Fatalf("list: got %+v, want [%+v]", list, created)
		}
		var one dbReply
		rep = h.do("GET", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &one)
		if one != created {
			t.Fatalf("get: got %+v, want %+v", one, created)
		}
	})

	t.Run("drop refused while creating", func(t *testing.T) {
		rep := h.do("DELETE", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusConflict)
		rep.errorText(t)
	})

	finishCreate(t, h.store, "acme", 0, created.Job, "127.0.0.1:7379")

	t.Run("active db has its url", func(t *testing.T) {
		var one dbReply
		rep := h.do("GET", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &one)
		if one.State != "active" || one.Endpoint != "127.0.0.1:7379" || one.URL != "redis://acme@127.0.0.1:7379/0" {
			t.Fatalf("db: got %+v, want active at redis://acme@127.0.0.1:7379/0", one)
		}
	})

	t.Run("write mode change is announced", func(t *testing.T) {
		routes := subscribeRoutes(t, h.store)
		v0, err := h.store.Version(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var one dbReply
		rep := h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"write_mode": "async"})
		rep.want(t, http.StatusOK)
		rep.decode(t, &one)
		if one.WriteMode != "async" {
			t.Fatalf("write_mode: got %q, want async", one.WriteMode)
		}
		select {
		case rc := <-routes:
			rt := rc.GetRouteChanged().GetRoute()
			if rc.Version != v0+1 || rc.Sender != "api/test" || rt.GetTenant() != "acme" || rt.GetWriteMode() != buspb.WriteMode_WRITE_MODE_ASYNC ||
				rt.GetMaster() != m.Addr || rt.GetReplica() != r.Addr || rt.GetDb() != uint32(created.Slot.DB) {
				t.Fatalf("route changed: got %v, want acme/0 async on %s db %d at version %d", rc, m.Addr, created.Slot.DB, v0+1)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no RouteChanged on the bus within 5s")
		}
		db, err := h.store.DB(ctx, "acme", 0)
		if err != nil {
			t.Fatal(err)
		}
		if db.WriteMode != metadb.WriteAsync {
			t.Fatalf("stored write mode: got %q, want async", db.WriteMode)
		}
	})

	t.Run("resize that cannot start is refused", func(t *testing.T) {
		for _, tc := range []struct{ size, want string }{
			{"64M", "db 0 is already 64M"},
			{"256M", "no free 256M db to resize into"},
		} {
			rep := h.do("PATCH", "/v1/dbs/0", acme.Token, map[string]string{"size": tc.size})
			rep.want(t, http.StatusConflict)
			if got := rep.errorText(t); !strings.Contains(got, tc.want) {
				t.Fatalf("resize to %s: error %q, want it to contain %q", tc.size, got, tc.want)
			}
		}
	})

	t.Run("drop", func(t *testing.T) {
		var ref struct {
			Job string `json:"job"`
		}
		rep := h.do("DELETE", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusAccepted)
		rep.decode(t, &ref)
		var job jobReply
		rep = h.do("GET", "/v1/jobs/"+ref.Job, acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &job)
		if job.Kind != "drop" || job.State != "running" || job.Tenant != "acme" || job.Index != 0 || len(job.Log) == 0 {
			t.Fatalf("job: got %+v, want a running drop job of acme/0 with a log", job)
		}
		var one dbReply
		rep = h.do("GET", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusOK)
		rep.decode(t, &one)
		if one.State != "dropping" || one.Job != ref.Job {
			t.Fatalf("db: got state %q job %q, want dropping with job %q", one.State, one.Job, ref.Job)
		}
		rep = h.do("DELETE", "/v1/dbs/0", acme.Token, nil)
		rep.want(t, http.StatusAccepted)
		var again struct {
			Job string `json:"job"`
		}
		rep.decode(t, &again)
		if again.Job != ref.Job {
			t.Fatalf("second drop: got job %q, want the same job %q", again.Job, ref.Job)
		}
	})
}

// TestCreateWaitsForMaster shows that POST /v1/dbs answers the finished db
// when the master completes the create job within CreateWait.
func TestCreateWaitsForMaster(t *testing.T) {
	h := newHarness(t, func(c *tenantapi.Config) { c.CreateWait = 10 * time.Second })
	m, r := startPair(t, "2gb", 16)
	h.addPair("32M", m, r, "0-3")
	acme := h.signup("acme")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { // plays the master: finishes every create job it sees
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			jobs, err := h.store.ActiveJobs(ctx)
			if err != nil {
				continue
			}
			for _, j := range jobs {
				if j.Kind == metadb.JobCreate {
					if err := completeCreate(h.store, j.Tenant, j.Index, j.ID, "127.0.0.1:7380"); err != nil {
						t.Errorf("finish create job %s: %v", j.ID, err)
					}
				}
			}
		}
	}()
	start := time.Now()
	rep := h.do("POST", "/v1/dbs", acme.Token, map[string]string{"size": "32m", "write_mode": "async"})
	cancel()
	<-done
	rep.want(t, http.StatusCreated)
	var db dbReply
	rep.decode(t, &db)
	if db.State != "active" || db.WriteMode != "async" || db.URL != "redis://acme@127.0.0.1:7380/0" || db.Size != "32M" {
		t.Fatalf("db: got %+v, want an active async 32M db at redis://acme@127.0.0.1:7380/0", db)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("create took %v, want it to return as soon as the job is done", took)
	}
}

// subscribeRoutes collects the RouteChanged messages of the bus from the
// moment it returns.
func subscribeRoutes(t *testing.T, store *metadb.Store) <-chan *buspb.Envelope {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan *buspb.Envelope, 16)
	ready := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		first := true
		_ = store.Subscribe(ctx, metadb.Subscriber{
			Handle: func(ctx context.Context, env *buspb.Envelope) {
				if env.GetRouteChanged() != nil {
					select {
					case out <- env:
					default:
					}
				}
			},
			Resync: func(ctx context.Context) (uint64, error) {
				if first {
					first = false
					close(ready)
				}
				return store.Version(ctx)
			},
		})
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("bus subscription not ready within 5s")
	}
	return out
}

package tenantapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	tenantapi "github.com/granary-db/granary/tenant-api"
	"github.com/rs/zerolog"
)

const adminToken = "test-admin-token-0123456789"

// harness is one API server over its own metadb (a real redis-server).
type harness struct {
	t      testing.TB
	store  *metadb.Store
	api    *tenantapi.Server
	srv    *httptest.Server
	client *http.Client
}

func newHarness(t testing.TB, tweak func(*tenantapi.Config)) *harness {
	t.Helper()
	meta := redistest.Start(t)
	store, err := metadb.Open(metadb.Config{URL: "redis://" + meta.Addr + "/0", PoolSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := tenantapi.DefaultConfig()
	cfg.AdminToken = adminToken
	cfg.CreateWait = 50 * time.Millisecond
	cfg.ID = "test"
	if tweak != nil {
		tweak(&cfg)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	if _, fuzzing := t.(*testing.F); fuzzing {
		log = zerolog.Nop() // a fuzz target may not log through *testing.F
	}
	api, err := tenantapi.New(cfg, store, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 30 * time.Second
	// Every answer any test gets is checked against the OpenAPI document.
	client.Transport = &validating{t: t, base: client.Transport, routes: api.Handler().(chi.Routes), doc: loadDoc(t)}
	return &harness{t: t, store: store, api: api, srv: srv, client: client}
}

// reply is an HTTP answer, read whole.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// request is one call; body is sent as is when it is []byte or string,
// JSON-encoded otherwise, and not at all when nil. auth, when set, replaces
// the Authorization header built from token.
type request struct {
	method, path, token string
	body                any
	auth                string
	contentType         string
}

func (h *harness) send(rq request) reply {
	h.t.Helper()
	var body io.Reader
	switch b := rq.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = bytes.NewReader([]byte(b))
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		body = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(rq.method, h.srv.URL+rq.path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	switch {
	case rq.auth != "":
		req.Header.Set("Authorization", rq.auth)
	case rq.token != "":
		req.Header.Set("Authorization", "Bearer "+rq.token)
	}
	if rq.contentType != "" {
		req.Header.Set("Content-Type", rq.contentType)
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", rq.method, rq.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read body: %v", rq.method, rq.path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func (h *harness) do(method, path, token string, body any) reply {
	h.t.Helper()
	return h.send(request{method: method, path: path, token: token, body: body})
}

// decode parses the body into v strictly, failing the test on any mismatch.
func (r reply) decode(t testing.TB, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// errorText checks that the body is exactly {"error":"<non-empty>"} and
// returns the text.
func (r reply) errorText(t testing.TB) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.decode(t, &e)
	if e.Error == "" {
		t.Fatalf("error body %s: got empty error, want a message", r.body)
	}
	return e.Error
}

func (r reply) want(t testing.TB, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %v, want %v (body %s)", r.status, status, r.body)
	}
}

type signupReply struct {
	Tenant   string `json:"tenant"`
	Token    string `json:"token"`
	User     string `json:"user"`
	Password string `json:"password"`
}

func (h *harness) signup(name string) signupReply {
	h.t.Helper()
	r := h.do("POST", "/v1/tenants", "", map[string]string{"name": name})
	r.want(h.t, http.StatusCreated)
	var s signupReply
	r.decode(h.t, &s)
	return s
}

type slotReply struct {
	Pair string `json:"pair"`
	DB   int    `json:"db"`
}

type dbReply struct {
	Index      int       `json:"index"`
	Size       string    `json:"size"`
	State      string    `json:"state"`
	WriteMode  string    `json:"write_mode"`
	UsedBytes  int64     `json:"used_bytes"`
	QuotaBytes int64     `json:"quota_bytes"`
	Banned     bool      `json:"banned"`
	Endpoint   string    `json:"endpoint"`
	URL        string    `json:"url"`
	Slot       slotReply `json:"slot"`
	Job        string    `json:"job"`
	Created    string    `json:"created"`
	// WriteDegraded and Warning: set while the db's pair has no replica
	// and its writes are acknowledged without one.
	WriteDegraded bool   `json:"write_degraded"`
	Warning       string `json:"warning"`
}

type jobReply struct {
	ID       string           `json:"id"`
	Kind     string           `json:"kind"`
	State    string           `json:"state"`
	Step     string           `json:"step"`
	Progress float64          `json:"progress"`
	Tenant   string           `json:"tenant"`
	Index    int              `json:"index"`
	Error    string           `json:"error"`
	Created  string           `json:"created"`
	Updated  string           `json:"updated"`
	Log      []metadb.JobStep `json:"log"`
}

type pairReply struct {
	ID      string `json:"id"`
	Size    string `json:"size"`
	Master  string `json:"master"`
	Replica string `json:"replica"`
	DBs     int    `json:"dbs"`
	Free    int    `json:"free"`
	Keeper  string `json:"keeper"`
	State   string `json:"state"`
	// Persistence is the pair's policy ("none" unless the test declared
	// another).
	Persistence string `json:"persistence"`
}

// addPair registers a pair through the admin API and fails unless it is 201.
func (h *harness) addPair(size string, master, replica *redistest.Server, dbs string) pairReply {
	h.t.Helper()
	r := h.do("POST", "/v1/admin/pools/"+size+"/pairs", adminToken,
		map[string]string{"master": master.Addr, "replica": replica.Addr, "dbs": dbs})
	r.want(h.t, http.StatusCreated)
	var p pairReply
	r.decode(h.t, &p)
	return p
}

// snapshot is every metadb key with its DUMP, to prove a call changed
// nothing. The audit stream is left out: it records refused calls too.
func (h *harness) snapshot() map[string]string {
	h.t.Helper()
	ctx := context.Background()
	c := h.store.Client()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		h.t.Fatal(err)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if k == metadb.AuditKey() {
			continue
		}
		v, err := c.Dump(ctx, k).Result()
		if err != nil {
			h.t.Fatalf("dump %s: %v", k, err)
		}
		out[k] = v
	}
	return out
}

// diffKeys names the keys whose presence or value differs.
func diffKeys(a, b map[string]string) []string {
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// finishCreate does in metadb what the master does when a create job ends:
// the db becomes active behind a proxy and the job is done.
func finishCreate(t testing.TB, store *metadb.Store, tenant string, index int, jobID, proxyAddr string) {
	t.Helper()
	if err := completeCreate(store, tenant, index, jobID, proxyAddr); err != nil {
		t.Fatal(err)
	}
}

func completeCreate(store *metadb.Store, tenant string, index int, jobID, proxyAddr string) error {
	ctx := context.Background()
	_, err := store.UpdateDB(ctx, nil, "master/test", tenant, index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		db.State, db.Proxy, db.ProxyAddr = metadb.DBActive, "px-test", proxyAddr
		return nil, nil
	})
	if err != nil {
		return err
	}
	_, err = store.UpdateJob(ctx, nil, jobID, func(j *metadb.Job) error {
		j.State, j.Step, j.Progress = metadb.JobDone, metadb.StepDone, 1
		return nil
	})
	return err
}

// jsonDecode reads one JSON value from r into v.
func jsonDecode(r io.Reader, v any) error {
	return json.NewDecoder(r).Decode(v)
}

// startPair starts a master and its replica with the given maxmemory and
// databases, and waits until the replica's link is up.
func startPair(t testing.TB, maxmemory string, databases int) (master, replica *redistest.Server) {
	t.Helper()
	return redistest.StartPair(t, "maxmemory", maxmemory, "databases", strconv.Itoa(databases))
}

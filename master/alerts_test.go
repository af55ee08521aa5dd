package master

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
)

// lockedBuffer is a log sink shared by the master's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startAlertMaster runs a master with fast usage passes whose webhooks may
// reach loopback (the test receivers), logging into logs.
func startAlertMaster(t *testing.T, store *metadb.Store, id string, usage UsageConfig, logs io.Writer) func() {
	t.Helper()
	defaults := UsageConfig{Interval: 30 * time.Millisecond, Keep: 500, AlertPoll: 10 * time.Millisecond,
		RetryBase: 50 * time.Millisecond, Timeout: time.Second, WebhookAllow: []string{"127.0.0.0/8"}}
	if usage.Interval == 0 {
		usage.Interval = defaults.Interval
	}
	for _, f := range []struct{ dst, src *time.Duration }{{&usage.AlertPoll, &defaults.AlertPoll}, {&usage.RetryBase, &defaults.RetryBase}, {&usage.Timeout, &defaults.Timeout}} {
		if *f.dst == 0 {
			*f.dst = *f.src
		}
	}
	if usage.Keep == 0 {
		usage.Keep = defaults.Keep
	}
	if usage.WebhookAllow == nil {
		usage.WebhookAllow = defaults.WebhookAllow
	}
	m, err := New(Config{ID: id, LeaseTTL: 600 * time.Millisecond, JobPoll: 10 * time.Millisecond, Usage: usage}, store, zerolog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// receiver is a webhook: it answers 500 to its first failFirst requests,
// holds every request until release is closed when hang is set, and keeps
// what it got.
type receiver struct {
	failFirst int
	hang      bool
	release   chan struct{}

	mu       sync.Mutex
	got      []alertPayload
	sigs     []string
	inflight int
	maxIn    int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	var p alertPayload
	_ = json.Unmarshal(b, &p)
	rc.mu.Lock()
	rc.got = append(rc.got, p)
	rc.sigs = append(rc.sigs, r.Header.Get("X-Granary-Signature"))
	n := len(rc.got)
	rc.inflight++
	rc.maxIn = max(rc.maxIn, rc.inflight)
	rc.mu.Unlock()
	defer func() {
		rc.mu.Lock()
		rc.inflight--
		rc.mu.Unlock()
	}()
	if rc.hang {
		select {
		case <-rc.release:
		case <-r.Context().Done():
		}
		return
	}
	if n <= rc.failFirst {
		http.Error(w, "secret internal detail", http.StatusInternalServerError)
	}
}

func (rc *receiver) requests() ([]alertPayload, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]alertPayload(nil), rc.got...), append([]string(nil), rc.sigs...)
}

// alertDB gives tenant an active db (the running master creates it) with
// rule, and helpers that set its used bytes and wait for samples.
type alertDB struct {
	t      *testing.T
	store  *metadb.Store
	tenant string
	index  int
}

func newAlertDB(t *testing.T, c *cluster, tenant string, rule metadb.AlertRule) *alertDB {
	t.Helper()
	ctx := t.Context()
	if tenant != "acme" {
		if _, err := c.store.CreateTenant(ctx, "test", tenant, "tok-"+tenant, "pw-"+tenant); err != nil {
			t.Fatal(err)
		}
	}
	db, job, err := c.store.ClaimDB(ctx, tenant, c.pair, metadb.WriteConfirmed, 1000, 8, "create-"+tenant)
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	if err := c.store.SetAlertRule(ctx, tenant, db.Index, rule, false); err != nil {
		t.Fatal(err)
	}
	return &alertDB{t: t, store: c.store, tenant: tenant, index: db.Index}
}

func (d *alertDB) setUsed(n int64) {
	d.t.Helper()
	_, err := d.store.UpdateDB(context.Background(), nil, "test", d.tenant, d.index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		db.UsedBytes = n
		return nil, nil
	})
	if err != nil {
		d.t.Fatal(err)
	}
}

func (d *alertDB) points() []metadb.UsagePoint {
	pts, err := d.store.Usage(d.t.Context(), d.tenant, d.index, time.Time{})
	if err != nil {
		d.t.Fatal(err)
	}
	return pts
}

// waitSamples waits until the series holds a point with used bytes n,
// then for three more samples.
func (d *alertDB) waitSamples(n int64) {
	d.t.Helper()
	var at time.Time
	redistest.WaitFor(d.t, 5*time.Second, "a sample of the new size", func() bool {
		pts := d.points()
		if len(pts) > 0 && pts[len(pts)-1].UsedBytes == n {
			at = pts[len(pts)-1].Time
			return true
		}
		return false
	})
	redistest.WaitFor(d.t, 5*time.Second, "three more samples", func() bool {
		later := 0
		for _, p := range d.points() {
			if p.Time.After(at) {
				later++
			}
		}
		return later >= 3
	})
}

func (d *alertDB) alerts() []*metadb.Alert {
	as, err := d.store.Alerts(d.t.Context(), d.tenant, d.index)
	if err != nil {
		d.t.Fatal(err)
	}
	return as
}

// TestAlertsOncePerCrossing: a receiver gets one alert per crossing,
// retried after its 500, signed with the secret; staying above fires
// nothing, a second crossing after recovery a second alert; a second master
// taking over fires nothing again for a crossing already alerted. Neither
// the log nor the audit stream holds the secret or the webhook.
func TestAlertsOncePerCrossing(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	logs := &lockedBuffer{}
	stop1 := startAlertMaster(t, c.store, "m1", UsageConfig{}, logs)
	rc := &receiver{failFirst: 1}
	hook := httptest.NewServer(rc)
	t.Cleanup(hook.Close)
	const secret, query = "SIGNING-SECRET-x1", "QUERY-TOKEN-y2"
	webhook := hook.URL + "/hook/path?token=" + query
	d := newAlertDB(t, c, "acme", metadb.AlertRule{Webhook: webhook, Secret: secret, UsedPct: 80})

	d.setUsed(900)
	d.waitSamples(900)
	redistest.WaitFor(t, 5*time.Second, "the alert delivered after a retry", func() bool {
		as := d.alerts()
		return len(as) == 1 && as[0].State == metadb.AlertDelivered
	})
	a := d.alerts()[0]
	if a.Attempts != 2 || a.Metric != metadb.MetricUsedPct || a.Value != 90 || a.Threshold != 80 {
		t.Fatalf("alert %+v: want used_pct 90 over 80, delivered at the second attempt", a)
	}
	reqs, sigs := rc.requests()
	if len(reqs) != 2 || reqs[0].ID != a.ID || reqs[1].ID != a.ID || reqs[1].Tenant != "acme" || reqs[1].Index != d.index {
		t.Fatalf("webhook got %+v, want alert %s twice", reqs, a.ID)
	}
	body, _ := json.Marshal(alertPayload{ID: a.ID, Tenant: a.Tenant, Index: a.Index, Metric: a.Metric, Value: a.Value, Threshold: a.Threshold, Time: a.Time})
	if sigs[1] != sign(secret, body) || !strings.HasPrefix(sigs[1], "sha256=") {
		t.Fatalf("signature %q, want %q", sigs[1], sign(secret, body))
	}
	pt := d.points()[len(d.points())-1]
	if pt.QuotaBytes != 1000 || pt.Banned {
		t.Fatalf("last point %+v", pt)
	}

	// Staying above fires nothing more; falling below re-arms; crossing
	// again fires a second alert, delivered at once.
	d.setUsed(950)
	d.waitSamples(950)
	d.setUsed(100)
	d.waitSamples(100)
	if n := len(d.alerts()); n != 1 {
		t.Fatalf("%d alerts before the second crossing, want 1", n)
	}
	d.setUsed(850)
	d.waitSamples(850)
	redistest.WaitFor(t, 5*time.Second, "the second alert delivered", func() bool {
		as := d.alerts()
		return len(as) == 2 && as[1].State == metadb.AlertDelivered
	})
	if reqs, _ := rc.requests(); len(reqs) != 3 || reqs[2].ID == a.ID {
		t.Fatalf("webhook got %+v, want a third request for a new alert", reqs)
	}

	// A second master takes over while the db is still above: no repeat.
	stop1()
	startAlertMaster(t, c.store, "m2", UsageConfig{}, logs)
	before := len(d.points())
	redistest.WaitFor(t, 5*time.Second, "m2 samples", func() bool { return len(d.points()) >= before+5 })
	if reqs, _ := rc.requests(); len(reqs) != 3 {
		t.Fatalf("after the takeover the webhook got %d requests, want still 3", len(reqs))
	}
	d.setUsed(100)
	d.waitSamples(100)
	d.setUsed(900)
	d.waitSamples(900)
	redistest.WaitFor(t, 5*time.Second, "m2's alert delivered", func() bool {
		as := d.alerts()
		return len(as) == 3 && as[2].State == metadb.AlertDelivered
	})
	if reqs, _ := rc.requests(); len(reqs) != 4 {
		t.Fatalf("webhook got %d requests, want 4", len(reqs))
	}

	entries, _, err := c.store.AuditLog(ctx, metadb.AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	audit, _ := json.Marshal(entries)
	for _, leak := range []string{secret, query, "/hook/path", hook.Listener.Addr().String()} {
		if strings.Contains(logs.String(), leak) {
			t.Fatalf("the master's log holds %q:\n%s", leak, logs.String())
		}
		if strings.Contains(string(audit), leak) {
			t.Fatalf("the audit stream holds %q", leak)
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "alert") {
			t.Fatalf("an alert went to the audit stream: %+v", e)
		}
	}
}

// TestWebhookAddressGuard: without an allow-list, loopback, private,
// link-local (the cloud metadata address) and a name that resolves to
// loopback are refused at dial time with "address not allowed" only, and
// nothing reaches the listener; with the loopback allow-list, a pair
// server's and metadb's own addresses are still refused.
func TestWebhookAddressGuard(t *testing.T) {
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	t.Cleanup(hook.Close)
	_, port, _ := net.SplitHostPort(hook.Listener.Addr().String())
	g, err := netguard.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	client := webhookClient(g, time.Second)
	for _, u := range []string{hook.URL + "/x", "http://localhost:" + port + "/x", "http://10.1.2.3/x",
		"http://169.254.169.254/latest/meta-data/", "https://[::1]:" + port + "/", "http://0.0.0.0:" + port + "/"} {
		err := deliver(t.Context(), client, u, "", &metadb.Alert{ID: "1"})
		if err == nil || err.Error() != "address not allowed" {
			t.Fatalf("deliver to %s: %v, want exactly \"address not allowed\"", u, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the refused deliveries reached the listener %d times", n)
	}

	// A redirect is not followed, and a 500's body is not recorded.
	open, _ := netguard.New([]string{"127.0.0.0/8"})
	client = webhookClient(open, time.Second)
	redirect := httptest.NewServer(http.RedirectHandler(hook.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	if err := deliver(t.Context(), client, redirect.URL, "", &metadb.Alert{ID: "1"}); err == nil || err.Error() != "delivery failed: HTTP 302" || hits.Load() != 0 {
		t.Fatalf("redirect: %v, %d hits; want \"delivery failed: HTTP 302\" and none", err, hits.Load())
	}
	fail := httptest.NewServer(&receiver{failFirst: 1})
	t.Cleanup(fail.Close)
	if err := deliver(t.Context(), client, fail.URL, "", &metadb.Alert{ID: "1"}); err == nil || err.Error() != "delivery failed: HTTP 500" {
		t.Fatalf("500: %v", err)
	}
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	if err := deliver(t.Context(), client, closedURL, "", &metadb.Alert{ID: "1"}); err == nil || err.Error() != "connection refused" {
		t.Fatalf("closed port: %v, want \"connection refused\"", err)
	}

	// The master's own guard, allow-listed loopback: the pair's servers and
	// metadb stay refused.
	c := newCluster(t)
	startAlertMaster(t, c.store, "m1", UsageConfig{Attempts: 2}, io.Discard)
	for i, target := range []string{c.pair.Master, c.pair.Replica, c.store.MetadbAddrs(t.Context())[0]} {
		tenant := fmt.Sprintf("t%d", i)
		d := newAlertDB(t, c, tenant, metadb.AlertRule{Webhook: "http://" + target + "/", UsedPct: 50})
		d.setUsed(900)
		redistest.WaitFor(t, 10*time.Second, "the delivery to "+target+" given up", func() bool {
			as := d.alerts()
			return len(as) == 1 && as[0].State == metadb.AlertFailed
		})
		if a := d.alerts()[0]; a.LastError != "address not allowed" || a.Attempts != 2 {
			t.Fatalf("alert to %s: %+v, want given up after 2 attempts with \"address not allowed\"", target, a)
		}
	}
}

// TestAlertFloodStaysFair: one db crosses its threshold on almost every
// pass and its receiver hangs; another tenant's alert is still delivered
// promptly (target 500 ms, failure bound 3 s), the flooding tenant never
// has more than one delivery in flight nor more than one pending alert,
// and its history stays capped.
func TestAlertFloodStaysFair(t *testing.T) {
	c := newCluster(t)
	startAlertMaster(t, c.store, "m1", UsageConfig{Interval: 20 * time.Millisecond, Timeout: 2 * time.Second, Workers: 4}, io.Discard)
	hang := &receiver{hang: true, release: make(chan struct{})}
	slow := httptest.NewServer(hang)
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang.release) })
	good := &receiver{}
	fast := httptest.NewServer(good)
	t.Cleanup(fast.Close)

	flood := newAlertDB(t, c, "acme", metadb.AlertRule{Webhook: slow.URL, UsedPct: 80})
	calm := newAlertDB(t, c, "zeta", metadb.AlertRule{Webhook: fast.URL, UsedPct: 80})
	ctx, cancel := context.WithCancel(t.Context())
	flipped := make(chan struct{})
	go func() {
		defer close(flipped)
		tk := time.NewTicker(25 * time.Millisecond)
		defer tk.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			n := int64(900)
			if i%2 == 1 {
				n = 100
			}
			_, _ = c.store.UpdateDB(ctx, nil, "test", "acme", flood.index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
				db.UsedBytes = n
				return nil, nil
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-flipped })
	checkBounds := func() {
		t.Helper()
		pending, err := c.store.PendingAlerts(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range pending {
			if a.Tenant == "acme" {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("the flooding db has %d pending alerts, want at most 1", n)
		}
		if h := len(flood.alerts()); h > metadb.AlertHistoryKeep {
			t.Fatalf("the flooding db's history holds %d alerts, cap %d", h, metadb.AlertHistoryKeep)
		}
	}
	redistest.WaitFor(t, 10*time.Second, "the flood under way", func() bool {
		checkBounds()
		got, _ := hang.requests()
		return len(flood.alerts()) >= 10 && len(got) >= 1
	})

	start := time.Now()
	calm.setUsed(900)
	redistest.WaitFor(t, 3*time.Second, "the other tenant's alert delivered", func() bool {
		checkBounds()
		got, _ := good.requests()
		return len(got) == 1
	})
	took := time.Since(start)
	t.Logf("other tenant's alert delivered %v after its crossing (sample interval 20ms; target 500ms, failure bound 3s); flood db fired %d alerts", took, len(flood.alerts()))
	redistest.WaitFor(t, 10*time.Second, "the flood goes on past the cap", func() bool {
		checkBounds()
		return len(flood.alerts()) >= metadb.AlertHistoryKeep
	})
	hang.mu.Lock()
	maxIn := hang.maxIn
	hang.mu.Unlock()
	if maxIn > 1 {
		t.Fatalf("the flooding tenant had %d deliveries in flight, want at most 1", maxIn)
	}
	if got, _ := good.requests(); len(got) != 1 || got[0].Tenant != "zeta" {
		t.Fatalf("the calm receiver got %+v", got)
	}
}

package master

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/metadb"
)

// Alert delivery. The leader keeps a bounded pool of workers
// (UsageConfig.Workers) that POST pending alerts to their rules' webhooks.
// Each tenant has at most one delivery in flight and idle tenants are
// served in turn, so a tenant whose receiver hangs holds one worker for at
// most one attempt's timeout while every other tenant keeps being served.
// Every connection goes through a netguard.Guard at dial time: public
// unicast only (plus the operator's allow-list), never metadb nor any of
// the cluster's own servers; redirects are not followed. What is recorded
// of a failure is a fixed phrase ("delivery failed: HTTP 500",
// "connection refused", "address not allowed", …), never what answered.
// A delivery is at least once: a leader that dies between a POST and its
// record leaves the alert pending, and the next leader posts it again with
// the same id (X-Granary-Alert), which receivers can use to drop repeats.

// deliveryBodyLimit bounds what is read of a webhook's answer (the rest is
// dropped with the connection).
const deliveryBodyLimit = 4 << 10

// denyRefresh is how often the guard's list of the cluster's own servers
// is refreshed from metadb.
const denyRefresh = 2 * time.Second

// alertPayload is the JSON body POSTed to a webhook.
type alertPayload struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	Index     int       `json:"index"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
}

// deliveryError is a failed attempt, said without what answered.
type deliveryError string

func (e deliveryError) Error() string { return string(e) }

const (
	errAddrRefused  deliveryError = "address not allowed"
	errConnRefused  deliveryError = "connection refused"
	errTimedOut     deliveryError = "timed out"
	errNoSuchHost   deliveryError = "host not found"
	errTLS          deliveryError = "tls handshake failed"
	errDelivery     deliveryError = "delivery failed"
	errRuleRemoved  deliveryError = "alert rule removed"
	errBadWebhookIn deliveryError = "bad webhook"
)

// classify turns a transport error into a fixed phrase: the tenant named
// the address, but must learn nothing of what answered there (or of the
// addresses a name resolved to) beyond these.
func classify(err error) deliveryError {
	var de deliveryError
	var ne net.Error
	var dns *net.DNSError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &de):
		return de
	case errors.Is(err, netguard.ErrRefused):
		return errAddrRefused
	case errors.Is(err, syscall.ECONNREFUSED):
		return errConnRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return errTimedOut
	case errors.As(err, &dns):
		return errNoSuchHost
	case errors.As(err, &cv), errors.As(err, &rh):
		return errTLS
	}
	return errDelivery
}

// webhookClient posts alerts: every dial checked by the guard, no proxy
// from the environment, no redirects (a 3xx is a failed delivery), no
// kept-alive connections, and timeout bounding each attempt.
func webhookClient(g *netguard.Guard, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.Dialer(timeout).DialContext,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		MaxResponseHeaderBytes: 16 << 10,
		DisableKeepAlives:      true,
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// sign is the X-Granary-Signature of body under secret.
func sign(secret string, body []byte) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(body)
	return "sha256=" + hex.EncodeToString(h.Sum(nil))
}

// deliver POSTs one alert to webhook; any status but 2xx is a failure.
// The error is always a deliveryError.
func deliver(ctx context.Context, c *http.Client, webhook, secret string, a *metadb.Alert) error {
	body, _ := json.Marshal(alertPayload{ID: a.ID, Tenant: a.Tenant, Index: a.Index, Metric: a.Metric,
		Value: a.Value, Threshold: a.Threshold, Time: a.Time})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, webhook, bytes.NewReader(body))
	if err != nil {
		return errBadWebhookIn
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "granary-alerts")
	req.Header.Set("X-Granary-Alert", a.ID)
	if secret != "" {
		req.Header.Set("X-Granary-Signature", sign(secret, body))
	}
	resp, err := c.Do(req)
	if err != nil {
		return classify(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, deliveryBodyLimit))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return deliveryError(fmt.Sprintf("delivery failed: HTTP %d", resp.StatusCode))
	}
	return nil
}

// settle records the outcome of one attempt in a: delivered, failed for
// good after cfg.Attempts, or pending with the next try after a backoff.
func settle(a *metadb.Alert, err error, cfg UsageConfig, now time.Time) {
	a.Attempts++
	switch {
	case err == nil:
		a.State, a.LastError, a.NextTry = metadb.AlertDelivered, "", time.Time{}
	case errors.Is(err, errRuleRemoved):
		a.State, a.LastError, a.NextTry = metadb.AlertCancelled, err.Error(), time.Time{}
	case a.Attempts >= cfg.Attempts:
		a.State, a.LastError, a.NextTry = metadb.AlertFailed, err.Error(), time.Time{}
	default:
		a.LastError, a.NextTry = err.Error(), now.Add(backoff(cfg.RetryBase, cfg.RetryMax, a.Attempts))
	}
}

// backoff is the wait after the attempts-th failure: base doubled per
// further failure, at most max.
func backoff(base, max time.Duration, attempts int) time.Duration {
	d := base
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// pickDue chooses the alerts to start now: of each tenant with nothing in
// flight, its due alert with the oldest id; tenants in turn starting after
// last; at most free of them. Pure, for the fairness test.
func pickDue(pending []*metadb.Alert, busy map[string]bool, last string, free int, now time.Time) []*metadb.Alert {
	first := map[string]*metadb.Alert{}
	for _, a := range pending {
		if busy[a.Tenant] || now.Before(a.NextTry) {
			continue
		}
		if cur, ok := first[a.Tenant]; !ok || idLess(a.ID, cur.ID) {
			first[a.Tenant] = a
		}
	}
	tenants := make([]string, 0, len(first))
	for t := range first {
		tenants = append(tenants, t)
	}
	slices.Sort(tenants)
	// Rotate: the tenants after last first, then the rest.
	i, _ := slices.BinarySearch(tenants, last)
	if i < len(tenants) && tenants[i] == last {
		i++
	}
	tenants = append(tenants[i:], tenants[:i]...)
	var out []*metadb.Alert
	for _, t := range tenants {
		if len(out) == free {
			break
		}
		out = append(out, first[t])
	}
	return out
}

func idLess(a, b string) bool { return len(a) < len(b) || (len(a) == len(b) && a < b) }

// wakeDelivery makes the delivery loop look at the pending alerts now.
func (m *Master) wakeDelivery() {
	select {
	case m.alertWake <- struct{}{}:
	default:
	}
}

// deliverAlerts is the leader's delivery loop: every AlertPoll, on a wake
// and whenever a worker finishes, it starts deliveries on the free workers.
// It returns nil when ctx ends (after the workers stopped) and
// ErrNotLeader when a record was refused.
func (m *Master) deliverAlerts(ctx context.Context, f *metadb.Fence) error {
	cfg := m.cfg.Usage
	client := webhookClient(m.guard, cfg.Timeout)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		busy = map[string]bool{} // tenants with a delivery in flight
		// recorded holds the attempts recorded per alert id, so that a
		// pass that read the pending alerts before a worker recorded one
		// does not start that alert again from the stale copy.
		recorded = map[string]int{}
		last     string
		deposed  atomic.Bool
		deniedAt time.Time
	)
	defer wg.Wait()
	finished := make(chan struct{}, 1)
	work := func(a *metadb.Alert) {
		defer wg.Done()
		defer func() {
			mu.Lock()
			delete(busy, a.Tenant)
			mu.Unlock()
			select {
			case finished <- struct{}{}:
			default:
			}
		}()
		var err error
		rule, rerr := m.store.AlertRule(ctx, a.Tenant, a.Index)
		switch {
		case errors.Is(rerr, metadb.ErrNotFound) || (rerr == nil && rule.Webhook == ""):
			err = errRuleRemoved
		case rerr != nil:
			return // metadb trouble: the next pass tries again
		default:
			actx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			err = deliver(actx, client, rule.Webhook, rule.Secret, a)
			cancel()
		}
		if ctx.Err() != nil {
			return // shutting down: the attempt does not count
		}
		settle(a, err, cfg, time.Now())
		err = m.store.RecordDelivery(ctx, f, a)
		if err == nil {
			mu.Lock()
			recorded[a.ID] = a.Attempts
			mu.Unlock()
		}
		if err != nil {
			if errors.Is(err, metadb.ErrNotLeader) {
				deposed.Store(true)
			} else if ctx.Err() == nil {
				m.log.Warn().Err(err).Str("alert", a.ID).Msg("alert delivery not recorded")
			}
			return
		}
		if a.State == metadb.AlertFailed {
			m.log.Warn().Str("alert", a.ID).Str("tenant", a.Tenant).Int("index", a.Index).
				Str("error", a.LastError).Msg("alert not delivered; giving up")
		}
	}
	pass := func() error {
		pending, err := m.store.PendingAlerts(ctx)
		if err != nil {
			return fmt.Errorf("pending alerts: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Since(deniedAt) >= denyRefresh {
			if err := m.refreshDeny(ctx); err != nil {
				return fmt.Errorf("refresh the webhook guard: %w", err) // deliver nothing unguarded
			}
			deniedAt = time.Now()
		}
		mu.Lock()
		defer mu.Unlock()
		fresh := pending[:0]
		seen := map[string]bool{}
		for _, a := range pending {
			seen[a.ID] = true
			if n, ok := recorded[a.ID]; !ok || a.Attempts >= n {
				fresh = append(fresh, a)
			}
		}
		for id := range recorded {
			if !seen[id] {
				delete(recorded, id) // settled, and this read is after the record
			}
		}
		for _, a := range pickDue(fresh, busy, last, cfg.Workers-len(busy), time.Now()) {
			busy[a.Tenant], last = true, a.Tenant
			wg.Add(1)
			go work(a)
		}
		return nil
	}
	t := time.NewTicker(cfg.AlertPoll)
	defer t.Stop()
	for {
		if deposed.Load() {
			return metadb.ErrNotLeader
		}
		if err := pass(); err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("alert delivery failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-finished:
		case <-m.alertWake:
		}
	}
}

// refreshDeny adds the cluster's own servers, as metadb lists them now, to
// the guard's deny list (it only grows: a server that left stays denied).
func (m *Master) refreshDeny(ctx context.Context) error {
	addrs := append(m.store.MetadbAddrs(ctx), m.MetricsAddr())
	addrs = append(addrs, m.cfg.Usage.WebhookDeny...)
	pairs, err := m.store.Pairs(ctx, "")
	if err != nil {
		return err
	}
	for _, p := range pairs {
		addrs = append(addrs, p.Master, p.Replica)
	}
	spares, err := m.store.Spares(ctx)
	if err != nil {
		return err
	}
	demoted, err := m.store.Demoted(ctx)
	if err != nil {
		return err
	}
	addrs = append(append(addrs, spares...), demoted...)
	for _, kind := range []metadb.Kind{metadb.KindProxy, metadb.KindKeeper} {
		ms, err := m.store.LiveMembers(ctx, kind)
		if err != nil {
			return err
		}
		for _, mb := range ms {
			addrs = append(addrs, mb.Addr)
		}
	}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue // not host:port (empty, or a unix socket): nothing to dial
		}
		if host == "" {
			host = "0.0.0.0" // listening on every address, loopback included
		}
		if m.denied[a] {
			continue
		}
		if err := m.guard.Deny(net.JoinHostPort(host, port)); err == nil {
			m.denied[a] = true
		}
	}
	return nil
}

package tenantapi

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
)

// A db's usage history and alerts (the master samples and fires them,
// master/usage.go):
//
//	GET /v1/dbs/{index}/usage?since=RFC3339  {"points":[usagePoint…]}, oldest first
//	GET /v1/dbs/{index}/alerts               alertsView
//	PUT /v1/dbs/{index}/alerts               {"webhook":"http(s)://…","secret":"…","used_pct":N,"ops_per_sec":N,"repl_lag_bytes":N} -> alertsView
//
// A threshold of 0 is off. A PUT replaces the rule and re-arms it: a db
// already above a threshold fires at the next sample. The secret is never
// shown back (secret_set), nor the webhook's query.

// usageStore is what the usage calls need of metadb.
type usageStore interface {
	Usage(ctx context.Context, tenant string, index int, since time.Time) ([]metadb.UsagePoint, error)
	AlertRule(ctx context.Context, tenant string, index int) (*metadb.AlertRule, error)
	SetAlertRule(ctx context.Context, tenant string, index int, r metadb.AlertRule, keepSecret bool) error
	Alerts(ctx context.Context, tenant string, index int) ([]*metadb.Alert, error)
}

type usageView struct {
	Points []metadb.UsagePoint `json:"points"`
}

func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) {
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			s.writeError(w, r, errorf(errBadRequest, "bad since %q: use an RFC 3339 time such as 2026-01-02T15:04:05Z", clip(v)))
			return
		}
		since = t
	}
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pts, err := s.store.Usage(r.Context(), db.Tenant, db.Index, since)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, usageView{Points: pts})
}

// alertsBody is a PUT's body. Secret absent keeps the stored one, "" removes it.
type alertsBody struct {
	Webhook      string  `json:"webhook"`
	Secret       *string `json:"secret"`
	UsedPct      float64 `json:"used_pct"`
	OpsPerSec    float64 `json:"ops_per_sec"`
	ReplLagBytes float64 `json:"repl_lag_bytes"`
}

// alertView is one fired alert as the tenant sees it.
type alertView struct {
	ID        string    `json:"id"`
	Metric    string    `json:"metric"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	Time      time.Time `json:"time"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error"`
}

// alertsView is a db's rule (empty when it has none) and its recorded
// alerts, oldest first. The webhook is shown with its query redacted, and
// of the secret only whether one is set.
type alertsView struct {
	Webhook      string      `json:"webhook"`
	SecretSet    bool        `json:"secret_set"`
	UsedPct      float64     `json:"used_pct"`
	OpsPerSec    float64     `json:"ops_per_sec"`
	ReplLagBytes float64     `json:"repl_lag_bytes"`
	Alerts       []alertView `json:"alerts"`
}

// maxWebhook bounds a webhook URL's length; maxSecret a signing secret's.
const (
	maxWebhook = 2048
	maxSecret  = 256
)

// redactWebhook is the webhook as shown back: its query (where tokens tend
// to live) and fragment replaced.
func redactWebhook(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	if u.RawQuery != "" || u.ForceQuery {
		u.RawQuery, u.ForceQuery = "redacted", false
	}
	return u.String()
}

// validate checks a PUT body. Error texts quote nothing of the URL beyond
// its scheme: it may carry a token.
func (s *Server) validateAlerts(b alertsBody) error {
	if len(b.Webhook) > maxWebhook {
		return errorf(errBadRequest, "bad webhook: longer than %d bytes", maxWebhook)
	}
	u, err := url.Parse(b.Webhook)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "":
		return errorf(errBadRequest, "bad webhook: use an absolute http:// or https:// URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errorf(errBadRequest, "bad webhook: scheme %q is not accepted; use http:// or https://", clip(u.Scheme))
	case u.User != nil:
		return errorf(errBadRequest, "bad webhook: credentials in the URL are not accepted; use a secret to sign deliveries")
	case b.Secret != nil && len(*b.Secret) > maxSecret:
		return errorf(errBadRequest, "bad secret: longer than %d bytes", maxSecret)
	case b.UsedPct < 0 || b.UsedPct > 100:
		return errorf(errBadRequest, "bad used_pct %v: use 0 (off) to 100", b.UsedPct)
	case b.OpsPerSec < 0 || b.OpsPerSec > 1e9:
		return errorf(errBadRequest, "bad ops_per_sec %v: use 0 (off) to 1000000000", b.OpsPerSec)
	case b.ReplLagBytes < 0 || b.ReplLagBytes > 1<<40:
		return errorf(errBadRequest, "bad repl_lag_bytes %v: use 0 (off) to %d", b.ReplLagBytes, int64(1)<<40)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return errorf(errBadRequest, "bad webhook: bad port")
	}
	// A name is checked where it matters, at each dial by the master; an
	// IP literal can be refused now.
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		if err := s.guard.Check(netip.AddrPortFrom(ip, uint16(p))); err != nil {
			return errorf(errBadRequest, "bad webhook: %v", err)
		}
	}
	return nil
}

func (s *Server) alertsOf(r *http.Request, db *metadb.DB) (alertsView, error) {
	v := alertsView{Alerts: []alertView{}}
	rule, err := s.store.AlertRule(r.Context(), db.Tenant, db.Index)
	switch {
	case errors.Is(err, metadb.ErrNotFound):
	case err != nil:
		return v, err
	default:
		v.Webhook, v.SecretSet = redactWebhook(rule.Webhook), rule.Secret != ""
		v.UsedPct, v.OpsPerSec, v.ReplLagBytes = rule.UsedPct, rule.OpsPerSec, rule.ReplLagBytes
	}
	as, err := s.store.Alerts(r.Context(), db.Tenant, db.Index)
	if err != nil {
		return v, err
	}
	for _, a := range as {
		v.Alerts = append(v.Alerts, alertView{ID: a.ID, Metric: a.Metric, Value: a.Value, Threshold: a.Threshold,
			Time: a.Time, State: a.State, Attempts: a.Attempts, LastError: a.LastError})
	}
	return v, nil
}

func (s *Server) getAlerts(w http.ResponseWriter, r *http.Request) {
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v, err := s.alertsOf(r, db)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) putAlerts(w http.ResponseWriter, r *http.Request) {
	db, err := s.loadDB(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var b alertsBody
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &b); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.validateAlerts(b); err != nil {
		s.writeError(w, r, err)
		return
	}
	rule := metadb.AlertRule{Webhook: b.Webhook, UsedPct: b.UsedPct, OpsPerSec: b.OpsPerSec, ReplLagBytes: b.ReplLagBytes}
	if b.Secret != nil {
		rule.Secret = *b.Secret
	}
	err = s.store.SetAlertRule(r.Context(), db.Tenant, db.Index, rule, b.Secret == nil)
	if errors.Is(err, metadb.ErrNotFound) {
		err = errorf(metadb.ErrNotFound, "no db %d", db.Index)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v, err := s.alertsOf(r, db)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

package tenantapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/granary-db/granary/metadb"
)

// A db's usage history and alerts (the master samples and fires them,
// master/usage.go):
//
//	GET /v1/dbs/{index}/usage?since=RFC3339  {"points":[usagePoint…]}, oldest first
//	GET /v1/dbs/{index}/alerts               alertsView
//	PUT /v1/dbs/{index}/alerts               {"webhook":"http(s)://…","used_pct":N,"ops_per_sec":N} -> alertsView
//
// A threshold of 0 is off. A PUT replaces the rule and re-arms it: a db
// already above a threshold fires at the next sample.

// usageStore is what the usage calls need of metadb.
type usageStore interface {
	Usage(ctx context.Context, tenant string, index int, since time.Time) ([]metadb.UsagePoint, error)
	AlertRule(ctx context.Context, tenant string, index int) (*metadb.AlertRule, error)
	SetAlertRule(ctx context.Context, tenant string, index int, r metadb.AlertRule) error
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

// alertsBody is a PUT's body.
type alertsBody struct {
	Webhook   string  `json:"webhook"`
	UsedPct   float64 `json:"used_pct"`
	OpsPerSec float64 `json:"ops_per_sec"`
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
// alerts, oldest first.
type alertsView struct {
	alertsBody
	Alerts []alertView `json:"alerts"`
}

// maxWebhook bounds a webhook URL's length.
const maxWebhook = 2048

func (b alertsBody) validate() error {
	u, err := url.Parse(b.Webhook)
	switch {
	case len(b.Webhook) > maxWebhook:
		return errorf(errBadRequest, "bad webhook: longer than %d bytes", maxWebhook)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return errorf(errBadRequest, "bad webhook %q: use an http:// or https:// URL", clip(b.Webhook))
	case u.User != nil:
		return errorf(errBadRequest, "bad webhook: credentials in the URL are not accepted")
	case b.UsedPct < 0 || b.UsedPct > 100:
		return errorf(errBadRequest, "bad used_pct %v: use 0 (off) to 100", b.UsedPct)
	case b.OpsPerSec < 0 || b.OpsPerSec > 1e9:
		return errorf(errBadRequest, "bad ops_per_sec %v: use 0 (off) to 1000000000", b.OpsPerSec)
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
		v.alertsBody = alertsBody{Webhook: rule.Webhook, UsedPct: rule.UsedPct, OpsPerSec: rule.OpsPerSec}
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
	if err := b.validate(); err != nil {
		s.writeError(w, r, err)
		return
	}
	err = s.store.SetAlertRule(r.Context(), db.Tenant, db.Index, metadb.AlertRule{Webhook: b.Webhook, UsedPct: b.UsedPct, OpsPerSec: b.OpsPerSec})
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

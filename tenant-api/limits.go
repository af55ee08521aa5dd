package tenantapi

import (
	"context"
	"fmt"
	"net/http"
	"sort"

	"github.com/go-chi/chi/v5"
	"github.com/granary-db/granary/metadb"
)

// Per-tenant limits, enforced by every proxy (proxy/limits.go):
//
//	GET /v1/admin/tenants                  [limitsView…], every tenant, by name
//	GET /v1/admin/tenants/{tenant}/limits  limitsView
//	PUT /v1/admin/tenants/{tenant}/limits  {"max_connections":N,"ops_per_sec":N} -> limitsView
//	GET /v1/limits                         limitsView of the calling tenant
//
// A PUT replaces both limits; 0 or absent is the default.

// limitsStore is what the limits calls need of metadb.
type limitsStore interface {
	Tenant(ctx context.Context, name string) (*metadb.Tenant, error)
	Tenants(ctx context.Context) ([]*metadb.Tenant, error)
	SetLimits(ctx context.Context, sender, name string, l metadb.Limits) (*metadb.Tenant, error)
}

// limitsBody is a PUT's body, and what a view shows as configured.
type limitsBody struct {
	MaxConnections int64 `json:"max_connections"`
	OpsPerSec      int64 `json:"ops_per_sec"`
}

// limitsView is a tenant's limits as they take effect (the defaults
// filled in; ops_per_sec 0 is no limit) and as the admin configured them
// (0: the default). Both are per proxy: connections to one proxy, commands
// per second to each db through one proxy.
type limitsView struct {
	Tenant         string     `json:"tenant"`
	MaxConnections int64      `json:"max_connections"`
	OpsPerSec      int64      `json:"ops_per_sec"`
	Configured     limitsBody `json:"configured"`
}

// viewLimits shows t's limits with the proxies' default defaults
// (metadb.DefaultMaxConnections, DefaultOpsPerSec); a proxy started with
// other defaults applies its own to the fields configured as 0.
func viewLimits(t *metadb.Tenant) limitsView {
	v := limitsView{Tenant: t.Name, MaxConnections: metadb.DefaultMaxConnections, OpsPerSec: metadb.DefaultOpsPerSec,
		Configured: limitsBody{MaxConnections: t.Limits.MaxConnections, OpsPerSec: t.Limits.OpsPerSec}}
	if t.Limits.MaxConnections > 0 {
		v.MaxConnections = t.Limits.MaxConnections
	}
	if t.Limits.OpsPerSec > 0 {
		v.OpsPerSec = t.Limits.OpsPerSec
	}
	return v
}

// pathTenant is the {tenant} of the URL; a name no tenant can have is
// unknown without asking metadb.
func pathTenant(r *http.Request) (string, error) {
	name := chi.URLParam(r, "tenant")
	if !tenantName.MatchString(name) {
		return "", fmt.Errorf("no tenant %q: %w", name, metadb.ErrNotFound)
	}
	return name, nil
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	ts, err := s.store.Tenants(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	out := make([]limitsView, 0, len(ts))
	for _, t := range ts {
		out = append(out, viewLimits(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getTenantLimits(w http.ResponseWriter, r *http.Request) {
	name, err := pathTenant(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.answerLimits(w, r, name)
}

func (s *Server) putTenantLimits(w http.ResponseWriter, r *http.Request) {
	if n := noteOf(r); n != nil {
		n.target = clip(chi.URLParam(r, "tenant"))
		n.tenant = n.target
	}
	name, err := pathTenant(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req limitsBody
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	l := metadb.Limits{MaxConnections: req.MaxConnections, OpsPerSec: req.OpsPerSec}
	if err := l.Validate(); err != nil {
		s.writeError(w, r, errorf(errBadRequest, "%v", err))
		return
	}
	t, err := s.store.SetLimits(r.Context(), s.sender, name, l)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("tenant %s: %w", name, err))
		return
	}
	writeJSON(w, http.StatusOK, viewLimits(t))
}

// myLimits shows the calling tenant its own limits.
func (s *Server) myLimits(w http.ResponseWriter, r *http.Request) {
	s.answerLimits(w, r, tenantOf(r))
}

func (s *Server) answerLimits(w http.ResponseWriter, r *http.Request, name string) {
	t, err := s.store.Tenant(r.Context(), name)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("tenant %s: %w", name, err))
		return
	}
	writeJSON(w, http.StatusOK, viewLimits(t))
}

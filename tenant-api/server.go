// Package tenantapi is Granary's REST API: tenants sign up and manage their
// dbs, the superadmin adds capacity and watches the cluster. It keeps no
// state of its own; every call reads or changes metadb, so any number of API
// servers can run side by side. The contract is DESIGN.md's "Public contract".
package tenantapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/granary-db/granary/internal/importsrc"
	"github.com/granary-db/granary/internal/netguard"
	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Config of an API server.
type Config struct {
	// Store keeps db exports and uploaded RDB files (see internal/objstore);
	// nil disables the export and restore routes (503).
	Store objstore.Store
	// ImportAllow lists, comma-separated, the prefixes (CIDR) of private
	// addresses an import source may be on (see internal/netguard); public
	// unicast addresses are always allowed, the cluster's own servers
	// never. Default "" (none).
	ImportAllow string
	// Addr to listen on, host:port. Default 127.0.0.1:8080.
	Addr string
	// AdminToken grants the /v1/admin calls. Required; only its hash is kept.
	AdminToken string
	// RestoreWait bounds how long POST /v1/dbs/{index}/restore waits for
	// the keeper's check of the file (so that a file that does not load
	// or does not fit is refused in the answer) before answering 202 with
	// the job still at check. Default 30s.
	RestoreWait time.Duration
	// CreateWait bounds how long POST /v1/dbs waits for the master to finish
	// the create job before answering with state "creating". Default 5s.
	CreateWait time.Duration
	// MaxDBsPerTenant caps the dbs one tenant may hold. Default 64.
	MaxDBsPerTenant int
	// MaxBodyBytes caps a request body; larger ones get 413. Default 1 MiB.
	MaxBodyBytes int64
	// MaxExportsPerTenant caps the exports one tenant keeps (running ones
	// count), so the object store's use is bounded. Default 16.
	MaxExportsPerTenant int
	// ID names this server on the bus, as sender "api/<ID>". Default "api".
	ID string
	// ShutdownTimeout bounds the drain of in-flight requests when Run's
	// context ends. Default 10s.
	ShutdownTimeout time.Duration
	// WebhookAllow lists the CIDR prefixes an alert webhook given as an IP
	// literal may name although it is not public unicast; it should match
	// the master's (whose dial-time guard is the real check). Default none.
	WebhookAllow []string
	// KeyReportGap is the least time between two big-key scans of one db:
	// a request within it after a scan finished gets that scan's report.
	// Default 10s.
	KeyReportGap time.Duration
}

// DefaultConfig is a Config with every default filled in except AdminToken.
func DefaultConfig() Config {
	return Config{
		Addr:                "127.0.0.1:8080",
		CreateWait:          5 * time.Second,
		RestoreWait:         30 * time.Second,
		MaxDBsPerTenant:     64,
		MaxBodyBytes:        1 << 20,
		MaxExportsPerTenant: 16,
		ID:                  "api",
		ShutdownTimeout:     10 * time.Second,
		KeyReportGap:        10 * time.Second,
	}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("api: addr is empty")
	case c.AdminToken == "":
		return errors.New("api: admin token is empty")
	case c.CreateWait < 0:
		return fmt.Errorf("api: create wait %v < 0", c.CreateWait)
	case c.RestoreWait < 0:
		return fmt.Errorf("api: restore wait %v < 0", c.RestoreWait)
	case c.MaxDBsPerTenant < 1:
		return fmt.Errorf("api: max dbs per tenant %d < 1", c.MaxDBsPerTenant)
	case c.MaxBodyBytes < 1:
		return fmt.Errorf("api: max body bytes %d < 1", c.MaxBodyBytes)
	case c.MaxExportsPerTenant < 1:
		return fmt.Errorf("api: max exports per tenant %d < 1", c.MaxExportsPerTenant)
	case c.ID == "":
		return errors.New("api: id is empty")
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("api: shutdown timeout %v < 0", c.ShutdownTimeout)
	case c.KeyReportGap < 0:
		return fmt.Errorf("api: key report gap %v < 0", c.KeyReportGap)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("api: addr %q: %w", c.Addr, err)
	}
	if _, err := netguard.New(importsrc.SplitAllow(c.ImportAllow)); err != nil {
		return fmt.Errorf("api: import allow: %w", err)
	}
	return nil
}

// Store is the part of metadb the API uses. *metadb.Store satisfies it.
type Store interface {
	Ping(ctx context.Context) error

	// Tenants and their dbs.
	CreateTenant(ctx context.Context, sender, name, token, password string) (*metadb.Tenant, error)
	TenantByToken(ctx context.Context, token string) (*metadb.Tenant, error)
	DBs(ctx context.Context, tenant string) ([]*metadb.DB, error)
	AllDBs(ctx context.Context) ([]*metadb.DB, error)
	DB(ctx context.Context, tenant string, index int) (*metadb.DB, error)
	Place(ctx context.Context, size pools.Size, exclude string, claim func(ctx context.Context, p *metadb.Pair) error) error
	ClaimDB(ctx context.Context, tenant string, pair *metadb.Pair, writeMode string, quota int64, limit int, jobID string) (*metadb.DB, *metadb.Job, error)
	StartDrop(ctx context.Context, tenant string, index int, jobID string) (*metadb.Job, error)
	StartResize(ctx context.Context, tenant string, index int, size string, quota int64, jobID string) (*metadb.Job, error)
	StartDrain(ctx context.Context, pairID, jobID string) (job *metadb.Job, existing bool, err error)
	StartRebalance(ctx context.Context, size, jobID string) (job *metadb.Job, existing bool, err error)
	UpdateDB(ctx context.Context, f *metadb.Fence, sender, tenant string, index int, fn func(*metadb.DB) ([]*buspb.Envelope, error)) (*metadb.DB, error)
	Job(ctx context.Context, id string) (*metadb.Job, error)
	StartImport(ctx context.Context, tenant string, index int, jobID string, data map[string]string) (*metadb.Job, error)
	RequestImportCutover(ctx context.Context, tenant string, index int, jobID string) (*metadb.Job, error)
	CancelImport(ctx context.Context, tenant string, index int, jobID string) (*metadb.Job, error)
	StartRestore(ctx context.Context, tenant string, index int, jobID string, data map[string]string) (*metadb.Job, error)
	StartExport(ctx context.Context, tenant string, index int, jobID string, limit int) (*metadb.Job, error)
	Exports(ctx context.Context, tenant string) ([]*metadb.Job, error)
	Export(ctx context.Context, tenant, id string) (*metadb.Job, error)
	DeleteExport(ctx context.Context, tenant, id string) (*metadb.Job, error)
	MetadbAddrs(ctx context.Context) []string // the metadb's servers, which an import source may never be

	// Capacity and operators' views.
	Pair(ctx context.Context, id string) (*metadb.Pair, error)
	Pairs(ctx context.Context, size string) ([]metadb.PairView, error)
	PairHealth(ctx context.Context, id string) (*metadb.PairHealth, error)
	AddPair(ctx context.Context, size, master, replica string, dbs []int, opts ...metadb.PairOption) (*metadb.Pair, error)
	AddSpare(ctx context.Context, addr string) error
	Spares(ctx context.Context) ([]string, error)
	AddrRegistration(ctx context.Context, addr string) (string, error)
	Members(ctx context.Context, kind metadb.Kind, forget time.Duration) ([]*metadb.Member, error)
	Jobs(ctx context.Context, limit int) ([]*metadb.Job, error)

	// The audit stream.
	Audit(ctx context.Context, e metadb.AuditEntry) error
	AuditLog(ctx context.Context, q metadb.AuditQuery) ([]metadb.AuditEntry, string, error)
	limitsStore
	usageStore
	keysStore
}

var _ Store = (*metadb.Store)(nil)

// Server is the REST API. It is safe for concurrent use.
type Server struct {
	guard     *netguard.Guard // webhook IP literals, at PUT (usage.go)
	cfg       Config
	store     Store
	log       zerolog.Logger
	adminHash string
	sender    string
	metrics   *metrics
	handler   http.Handler
	refusals  *refusalGate // bounds the refusals the audit stream records
}

// New builds a Server. It does no I/O and starts nothing; it fails only on
// an invalid Config or a nil store.
func New(cfg Config, store Store, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("api: nil store")
	}
	guard, err := netguard.New(cfg.WebhookAllow)
	if err != nil {
		return nil, fmt.Errorf("api: webhook allow: %w", err)
	}
	s := &Server{
		guard:     guard,
		cfg:       cfg,
		store:     store,
		log:       log,
		adminHash: metadb.HashSecret(cfg.AdminToken),
		sender:    "api/" + cfg.ID,
		metrics:   newMetrics(store),
		refusals:  newRefusalGate(auditRefusalWindow, auditRefusalPerKey, auditRefusalTotal),
	}
	s.handler = s.routes()
	return s, nil
}

// Handler is the whole API as an http.Handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Run listens on cfg.Addr and serves until ctx ends, then drains in-flight
// requests for at most ShutdownTimeout. It returns nil after a clean
// shutdown, or the listen or serve error.
func (s *Server) Run(ctx context.Context) error {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	return s.Serve(ctx, l)
}

// Serve is Run on a listener the caller opened (tests use port 0). It takes
// ownership of l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.cfg.CreateWait + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	s.log.Info().Str("addr", l.Addr().String()).Msg("api listening")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
			return fmt.Errorf("api shutdown: %w", err)
		}
		return nil
	})
	err := g.Wait()
	s.log.Info().Msg("api stopped")
	return err
}

// routes wires every URL. Tenant and admin routes sit in separate groups so
// one kind of token can never reach the other's handlers.
func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, s.metrics.middleware, s.recoverer)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(errNoRoute, "no route %s %s", r.Method, r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, errorf(errMethod, "method %s is not allowed on %s", r.Method, r.URL.Path))
	})

	r.Get("/healthz", s.healthz)
	r.Method(http.MethodGet, "/metrics", s.metrics.handler())
	s.mountUI(r) // the dashboard, static files at /ui/ (ui.go)

	r.Route("/v1", func(r chi.Router) {
		r.Get("/openapi.json", s.openAPI)
		r.With(s.audited(metadb.AuditTenantSignup, false)).Post("/tenants", s.signup)
		r.Group(func(r chi.Router) {
			r.Use(s.tenantAuth)
			r.With(s.audited(metadb.AuditDBCreate, false)).Post("/dbs", s.createDB)
			r.Get("/dbs", s.listDBs)
			r.Get("/dbs/{index}", s.getDB)
			r.With(s.audited("", false)).Patch("/dbs/{index}", s.patchDB) // the body says which action
			r.With(s.audited(metadb.AuditDBDrop, false)).Delete("/dbs/{index}", s.dropDB)
			r.With(s.audited(metadb.AuditDBImport, false)).Post("/dbs/{index}/imports", s.startImport)
			r.With(s.audited(metadb.AuditDBImportCutover, false)).Post("/dbs/{index}/imports/{id}/cutover", s.cutoverImport)
			r.With(s.audited(metadb.AuditDBImportCancel, false)).Delete("/dbs/{index}/imports/{id}", s.cancelImport)
			r.With(s.audited(metadb.AuditDBRestore, false)).Post("/dbs/{index}/restore", s.restoreDB)
			r.With(s.audited(metadb.AuditDBExport, false)).Post("/dbs/{index}/exports", s.startExport)
			r.Get("/exports", s.listExports)
			r.Get("/exports/{id}", s.downloadExport)
			r.With(s.audited(metadb.AuditExportDelete, false)).Delete("/exports/{id}", s.deleteExport)
			r.Get("/jobs/{id}", s.getJob)
			r.Get("/audit", s.tenantAudit)
			r.Get("/limits", s.myLimits)
			r.Get("/dbs/{index}/usage", s.getUsage)
			r.Get("/dbs/{index}/alerts", s.getAlerts)
			r.With(s.audited(metadb.AuditDBAlerts, false)).Put("/dbs/{index}/alerts", s.putAlerts)
			r.Get("/dbs/{index}/keys/report", s.getKeyReport)
			r.Post("/dbs/{index}/keys/report", s.postKeyReport)
		})
		r.Route("/admin", func(r chi.Router) {
			r.Use(s.adminAuth)
			r.Get("/pools", s.listPools)
			r.With(s.audited(metadb.AuditPairAdd, true)).Post("/pools/{size}/pairs", s.addPair)
			r.With(s.audited(metadb.AuditPairDrain, true)).Post("/pairs/{id}/drain", s.drainPair)
			r.With(s.audited(metadb.AuditPoolRebalance, true)).Post("/pools/{size}/rebalance", s.rebalancePool)
			r.Get("/spares", s.listSpares)
			r.With(s.audited(metadb.AuditSpareAdd, true)).Post("/spares", s.addSpare)
			r.Get("/audit", s.adminAudit)
			r.Get("/proxies", s.listMembers(metadb.KindProxy))
			r.Get("/keepers", s.listMembers(metadb.KindKeeper))
			r.Get("/jobs", s.listJobs)
			r.Get("/jobs/{id}", s.getAnyJob)
			r.Get("/tenants", s.listTenants)
			r.Get("/tenants/{tenant}/limits", s.getTenantLimits)
			r.Get("/tenants/{tenant}/dbs/{index}/keys/report", s.adminKeyReport)
			r.With(s.audited(metadb.AuditTenantLimits, true)).Put("/tenants/{tenant}/limits", s.putTenantLimits)
		})
	})
	return r
}

// recoverer turns a handler panic into a logged 500, so no input can take
// the process down.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v)
				}
				return
			}
			s.writeError(w, r, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn().Err(err).Msg("metadb does not answer")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ok": false, "error": "metadb does not answer"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true})
}

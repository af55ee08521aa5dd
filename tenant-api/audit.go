package tenantapi

import (
	"context"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/granary-db/granary/metadb"
)

// What the REST audit records (the automatic decisions are recorded by
// metadb in their own transactions):
//
//   - every state-changing call of an authenticated caller, accepted ("ok")
//     or refused ("error: <the message the client got>"); a call refused
//     before it was authenticated is not (the tenant is unknown), nor a
//     PATCH whose body names neither field;
//   - a signup only when it succeeds: a refused one changes nothing and
//     would let anyone churn the capped stream;
//   - every refused credential on an admin route (auth.admin_failed): by
//     "anonymous", or by "tenant:<name>" for a tenant token, with the remote
//     address as target.
//
// An entry never holds a token, password, hash or header.

type auditKeyType struct{}

var auditKey auditKeyType

// auditNote is what an audited call learns about itself while it runs; the
// audited middleware records it once the answer's status is known.
type auditNote struct {
	action string
	target string
	tenant string
	actor  string
	// refusedToo is false for calls whose refusals are not recorded.
	refusedToo bool
	// err is the message the client got, set by writeError.
	err string
}

func noteOf(r *http.Request) *auditNote {
	n, _ := r.Context().Value(auditKey).(*auditNote)
	return n
}

// auditTarget names what the running call acts on.
func auditTarget(r *http.Request, target string) {
	if n := noteOf(r); n != nil {
		n.target = target
	}
}

// auditAction sets (or changes) the running call's action; "" records
// nothing.
func auditAction(r *http.Request, action string) {
	if n := noteOf(r); n != nil {
		n.action = action
	}
}

// audited records one entry for the call it wraps, after the handler
// answered. On admin routes the actor is "admin", on tenant routes the
// authenticated tenant; a handler may override both (signup does).
func (s *Server) audited(action string, admin bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := &auditNote{action: action, refusedToo: action != metadb.AuditTenantSignup, actor: "admin"}
			if !admin {
				n.tenant = tenantOf(r)
				n.actor = "tenant:" + n.tenant
				if index := chi.URLParam(r, "index"); index != "" {
					n.target = n.tenant + "/" + clip(index)
				}
			}
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			defer func() {
				// A handler that panics is answered 500 by the recoverer
				// further out; it is recorded as such, then the panic goes on.
				v := recover()
				status := ww.Status()
				if v != nil {
					status, n.err = http.StatusInternalServerError, "internal error; try again later"
				}
				s.recordNote(r, n, status)
				if v != nil {
					panic(v)
				}
			}()
			next.ServeHTTP(ww, r.WithContext(context.WithValue(r.Context(), auditKey, n)))
		})
	}
}

// recordNote appends the entry of an audited call that answered status.
func (s *Server) recordNote(r *http.Request, n *auditNote, status int) {
	if n.action == "" || (status >= 400 && !n.refusedToo) {
		return
	}
	if status >= 400 && !s.refusals.allow("tenant:"+n.tenant, time.Now()) {
		s.metrics.auditDropped.Inc()
		return
	}
	result := metadb.AuditOK
	if status >= 400 {
		msg := n.err
		if msg == "" {
			msg = http.StatusText(status)
		}
		result = "error: " + msg
	}
	s.audit(r, metadb.AuditEntry{Actor: n.actor, Action: n.action, Target: n.target, Tenant: n.tenant, Result: result})
}

// audit appends e with the request's id. The answer is already decided, so
// a failure is logged, not returned; the write outlives a client that left.
func (s *Server) audit(r *http.Request, e metadb.AuditEntry) {
	e.RequestID = clip(middleware.GetReqID(r.Context()))
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Second)
	defer cancel()
	if err := s.store.Audit(ctx, e); err != nil {
		s.log.Error().Err(err).Str("action", e.Action).Msg("audit entry lost")
	}
}

// auditAdminFailed records a refused credential on an admin route. tenant
// is the tenant whose token it was, or "".
func (s *Server) auditAdminFailed(r *http.Request, tenant string, err error) {
	host, _, splitErr := net.SplitHostPort(r.RemoteAddr)
	if splitErr != nil {
		host = r.RemoteAddr
	}
	if !s.refusals.allow("addr:"+host, time.Now()) {
		s.metrics.auditDropped.Inc()
		return
	}
	actor := "anonymous"
	if tenant != "" {
		actor = "tenant:" + tenant
	}
	msg := err.Error()
	if statusFor(err) == http.StatusInternalServerError {
		msg = "internal error"
	}
	s.audit(r, metadb.AuditEntry{Actor: actor, Action: metadb.AuditAdminAuthFailed, Target: r.RemoteAddr,
		Tenant: tenant, Result: "error: " + msg})
}

// auditPage is the answer of both audit routes.
type auditPage struct {
	Entries []metadb.AuditEntry `json:"entries"`
	Next    string              `json:"next"`
}

const (
	auditDefaultLimit = 100
	auditMaxLimit     = 1000
)

var auditCursor = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// parseAuditQuery reads the filters of an audit route; tenantFilter says
// whether "tenant" is one of them. Every bad or unknown parameter is a 400.
func parseAuditQuery(r *http.Request, tenantFilter bool) (metadb.AuditQuery, error) {
	q := metadb.AuditQuery{Limit: auditDefaultLimit}
	for name, vals := range r.URL.Query() {
		if len(vals) != 1 {
			return q, errorf(errBadRequest, "query parameter %q is given %d times: give it once", clip(name), len(vals))
		}
		v := vals[0]
		switch {
		case name == "tenant" && tenantFilter:
			if !tenantName.MatchString(v) {
				return q, errorf(errBadRequest, "bad tenant %q: a tenant name is 3-32 lowercase letters, digits and dashes", clip(v))
			}
			q.Tenant = v
		case name == "action":
			if !slices.Contains(metadb.AuditActions, v) {
				return q, errorf(errBadRequest, "bad action %q: use one of %v", clip(v), metadb.AuditActions)
			}
			q.Action = v
		case name == "since":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return q, errorf(errBadRequest, "bad since %q: use an RFC 3339 time such as 2026-01-02T15:04:05Z", clip(v))
			}
			q.Since = t
		case name == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > auditMaxLimit {
				return q, errorf(errBadRequest, "bad limit %q: use an integer from 1 to %d", clip(v), auditMaxLimit)
			}
			q.Limit = n
		case name == "cursor":
			if !auditCursor.MatchString(v) || !metadb.ValidAuditCursor(v) {
				return q, errorf(errBadRequest, "bad cursor %q: pass the \"next\" of the previous page as it is", clip(v))
			}
			q.Cursor = v
		default:
			known := "action, since, limit, cursor"
			if tenantFilter {
				known = "tenant, " + known
			}
			return q, errorf(errBadRequest, "unknown query parameter %q: use %s", clip(name), known)
		}
	}
	return q, nil
}

func (s *Server) serveAudit(w http.ResponseWriter, r *http.Request, q metadb.AuditQuery) {
	entries, next, err := s.store.AuditLog(r.Context(), q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, auditPage{Entries: entries, Next: next})
}

// adminAudit is GET /v1/admin/audit: every entry, newest first.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.serveAudit(w, r, q)
}

// tenantAudit is GET /v1/audit: the caller's own entries only.
func (s *Server) tenantAudit(w http.ResponseWriter, r *http.Request) {
	q, err := parseAuditQuery(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q.Tenant = tenantOf(r)
	s.serveAudit(w, r, q)
}

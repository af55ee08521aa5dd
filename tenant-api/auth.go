package tenantapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/granary-db/granary/metadb"
)

// maxTokenLen bounds what is hashed and looked up; our tokens are 46 bytes.
const maxTokenLen = 512

type ctxKey int

const tenantKey ctxKey = iota

// bearer extracts the token of an `Authorization: Bearer <token>` header.
func bearer(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errorf(errUnauthorized, "missing Authorization header: send Authorization: Bearer <token>")
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > maxTokenLen || strings.ContainsAny(token, " \t") {
		return "", errorf(errUnauthorized, "malformed Authorization header: send Authorization: Bearer <token>")
	}
	return token, nil
}

// tenantAuth admits requests that carry a tenant's API token and puts the
// tenant's name in the request context. The admin token is refused here:
// admin rights do not include acting as a tenant.
func (s *Server) tenantAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := bearer(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if metadb.SecretMatches(s.adminHash, token) {
			s.writeError(w, r, errorf(errUnauthorized, "the admin token cannot act as a tenant: use the tenant's own token"))
			return
		}
		t, err := s.store.TenantByToken(r.Context(), token)
		if errors.Is(err, metadb.ErrNotFound) {
			s.writeError(w, r, errorf(errUnauthorized, "invalid token"))
			return
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tenantKey, t.Name)))
	})
}

// tenantOf is the authenticated tenant's name; tenantAuth guarantees it.
func tenantOf(r *http.Request) string {
	name, _ := r.Context().Value(tenantKey).(string)
	return name
}

// adminAuth admits only the admin token, compared in constant time with its
// hash. A valid tenant token gets 403, anything else 401; every refusal is
// recorded in the audit stream (auth.admin_failed).
func (s *Server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, err := bearer(r)
		if err != nil {
			s.auditAdminFailed(r, "", err)
			s.writeError(w, r, err)
			return
		}
		if metadb.SecretMatches(s.adminHash, token) {
			next.ServeHTTP(w, r)
			return
		}
		t, err := s.store.TenantByToken(r.Context(), token)
		tenant := ""
		switch {
		case err == nil:
			tenant, err = t.Name, errorf(errForbidden, "admin token required")
		case errors.Is(err, metadb.ErrNotFound):
			err = errorf(errUnauthorized, "invalid token")
		}
		s.auditAdminFailed(r, tenant, err)
		s.writeError(w, r, err)
	})
}

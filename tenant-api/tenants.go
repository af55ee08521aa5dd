package tenantapi

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
)

// tenantName is what a tenant may be called: it becomes the Redis user name
// and part of metadb keys, so it stays short, lowercase and unambiguous.
var tenantName = regexp.MustCompile(`^[a-z][a-z0-9-]{1,30}[a-z0-9]$`)

type signupRequest struct {
	Name string `json:"name"`
}

type signupResponse struct {
	Tenant   string `json:"tenant"`
	Token    string `json:"token"`
	User     string `json:"user"`
	Password string `json:"password"`
}

// signup creates a tenant with a fresh API token and Redis password. Both
// are shown once, here; metadb keeps only their hashes.
func (s *Server) signup(w http.ResponseWriter, r *http.Request) {
	var req signupRequest
	if err := decodeJSON(w, r, s.cfg.MaxBodyBytes, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !tenantName.MatchString(req.Name) {
		s.writeError(w, r, errorf(errBadRequest,
			"bad tenant name %q: use 3-32 lowercase letters, digits and dashes, starting with a letter and not ending with a dash", clip(req.Name)))
		return
	}
	if n := noteOf(r); n != nil {
		n.actor, n.tenant, n.target = "tenant:"+req.Name, req.Name, req.Name
	}
	token := "gt_" + randomSecret()
	password := randomSecret()
	_, err := s.store.CreateTenant(r.Context(), s.sender, req.Name, token, password)
	if errors.Is(err, metadb.ErrExists) {
		err = errorf(metadb.ErrExists, "tenant name %s is taken: choose another", req.Name)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info().Str("tenant", req.Name).Msg("tenant signed up")
	writeJSON(w, http.StatusCreated, signupResponse{Tenant: req.Name, Token: token, User: req.Name, Password: password})
}

// randomSecret is 256 bits from crypto/rand, base64url without padding.
// crypto/rand.Read never fails on supported platforms (it panics rather
// than return weak bytes), so there is no error to handle.
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newJobID names a job: creation time (so ids sort roughly by age) and 48
// random bits (so API servers never collide).
func newJobID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "j" + strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b)
}

// jobID is the shape newJobID and the master produce; other ids are 404
// without a metadb lookup.
var jobID = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

// clip shortens untrusted input echoed in error messages.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

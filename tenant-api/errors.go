package tenantapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// The API's own error kinds. Handlers wrap them (with errorf) so statusFor
// can map every failure to its status without reading message text.
var (
	errBadRequest     = errors.New("bad request")
	errUnauthorized   = errors.New("unauthorized")
	errForbidden      = errors.New("forbidden")
	errTooLarge       = errors.New("request body too large")
	errMediaType      = errors.New("unsupported media type")
	errMethod         = errors.New("method not allowed")
	errNoRoute        = errors.New("no such route")
	errNotImplemented = errors.New("not implemented")
	errCreateFailed   = errors.New("create failed")
	errUnavailable    = errors.New("unavailable")
	errSourceCheck    = errors.New("import source check failed")
)

// kindError is an error whose message is exactly what the client reads,
// while errors.Is still finds its kind (and any error it wraps).
type kindError struct {
	kind error
	msg  string
	err  error // the wrapped cause, if the format had a %w
}

func (e *kindError) Error() string { return e.msg }

func (e *kindError) Unwrap() []error {
	if e.err != nil {
		return []error{e.kind, e.err}
	}
	return []error{e.kind}
}

// errorf formats a client-facing message and tags it with kind. A %w verb
// in format keeps that cause reachable through errors.Is too.
func errorf(kind error, format string, a ...any) error {
	cause := fmt.Errorf(format, a...)
	return &kindError{kind: kind, msg: cause.Error(), err: errors.Unwrap(cause)}
}

// statusFor is the one place that maps an error to an HTTP status. It
// matches sentinel errors only (errors.Is / errors.As), never message text;
// anything it does not know is a 500.
func statusFor(err error) int {
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &tooLarge), errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadRequest), errors.Is(err, pools.ErrBadSize), errors.Is(err, pools.ErrBadDBs),
		errors.Is(err, pools.ErrBadPersistence):
		return http.StatusBadRequest
	case errors.Is(err, errUnauthorized):
		return http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		return http.StatusForbidden
	case errors.Is(err, errNoRoute), errors.Is(err, metadb.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed
	case errors.Is(err, errMediaType):
		return http.StatusUnsupportedMediaType
	case errors.Is(err, metadb.ErrExists), errors.Is(err, pools.ErrNoCapacity),
		errors.Is(err, metadb.ErrTenantLimit), errors.Is(err, metadb.ErrBadState), errors.Is(err, metadb.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, pools.ErrPairCheck), errors.Is(err, metadb.ErrNoFit), errors.Is(err, errSourceCheck):
		return http.StatusUnprocessableEntity
	case errors.Is(err, errNotImplemented):
		return http.StatusNotImplemented
	case errors.Is(err, errCreateFailed), errors.Is(err, errUnavailable), errors.Is(err, metadb.ErrNotConfirmed),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers err as {"error":"…"} with statusFor's status. It is the
// edge where request errors are logged, once: server faults at error level,
// client mistakes, calls not built yet and clients that left at debug. A
// 500 hides its cause from the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusFor(err)
	msg := err.Error()
	ev := s.log.Debug()
	if status >= 500 && status != http.StatusNotImplemented && r.Context().Err() == nil {
		ev = s.log.Error()
	}
	ev.Err(err).Int("status", status).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
	if status == http.StatusInternalServerError {
		msg = "internal error; try again later"
	}
	if n := noteOf(r); n != nil {
		n.err = msg
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="granary"`)
	}
	writeJSON(w, status, errorBody{Error: msg})
}

type errorBody struct {
	Error string `json:"error"`
}

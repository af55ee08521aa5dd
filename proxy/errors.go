package proxy

import (
	"errors"

	"github.com/tidwall/redcon"
)

// Errors the proxy answers tenants with. Each is wrapped with context
// ("db 2 is over its 64M quota: %w") and turned into a Redis-style error
// line by respError, the one place that chooses the error code.
var (
	// ErrNoAuth: a command other than AUTH/HELLO/QUIT before authenticating.
	ErrNoAuth = errors.New("Authentication required.")
	// ErrWrongPass: AUTH with an unknown user or a wrong password.
	ErrWrongPass = errors.New("invalid username-password pair or user is disabled.")
	// ErrNoPerm: a command Granary refuses because it crosses dbs or
	// touches the server.
	ErrNoPerm = errors.New("this command is not available to tenants, it reaches beyond your own dbs")
	// ErrUnknownCommand: a command the backend does not know.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrArity: wrong number of arguments.
	ErrArity = errors.New("wrong number of arguments")
	// ErrSyntax: bad arguments to a command the proxy handles itself.
	ErrSyntax = errors.New("syntax error")
	// ErrDBRange: SELECT of an index the tenant does not own.
	ErrDBRange = errors.New("DB index is out of range")
	// ErrNoRoute: the selected db is not served (dropped, not ready yet).
	ErrNoRoute = errors.New("is not served by this proxy right now (dropped or not ready); check GET /v1/dbs")
	// ErrOverQuota: a denyoom command to a db under a quota ban.
	ErrOverQuota = errors.New("commands that add data are refused until it shrinks: delete keys, let them expire, FLUSHDB, or resize it with PATCH /v1/dbs/{index}")
	// ErrFenced: a write while this proxy's lease in the control plane has
	// lapsed, so it may no longer be routing to the right place.
	ErrFenced = errors.New("this Granary proxy lost contact with the control plane and refuses writes until it is back; retry shortly or use another proxy")
	// ErrNotConfirmed: a confirmed-mode write the replica did not confirm
	// within the timeout. The master has applied it; a failover may lose it.
	ErrNotConfirmed = errors.New("write reached the master but the replica did not confirm it in time; it may be lost if the master fails, retry or check")
	// ErrNoReplica: a confirmed-mode write while the db's pair has no
	// replica (after a failover, before a new one is attached).
	ErrNoReplica = errors.New("Not enough good replicas to write: the db is in confirmed write mode and its replica is being replaced; retry shortly, or switch it to async with PATCH /v1/dbs/{index}")
	// ErrReadOnly: a write to a db whose content a job is replacing.
	ErrReadOnly = errors.New("writes are refused until the job replacing its content ends (see GET /v1/dbs/{index}); nothing was written")
	// ErrHoldTimeout: a write held for a resize whose hold passed its deadline.
	ErrHoldTimeout = errors.New("the db is being resized and the write was held past the cut-over deadline; nothing was written, retry")
	// ErrHoldFull: too many writes already held for a resize.
	ErrHoldFull = errors.New("the db is being resized and too many writes are already waiting; nothing was written, retry shortly")
	// ErrBackend: a backend server did not answer.
	ErrBackend = errors.New("backend unavailable")
	// ErrBusyTx: MULTI/WATCH misuse.
	ErrBusyTx = errors.New("not allowed in this transaction state")
	// ErrExecAbort: EXEC after a command was refused while queueing.
	ErrExecAbort = errors.New("Transaction discarded because of previous errors.")
	// ErrPubSubOnly: a normal command on a connection in subscribed mode.
	ErrPubSubOnly = errors.New("only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
	// ErrProto: malformed RESP; the connection is closed after the answer.
	ErrProto = errors.New("Protocol error")
	// ErrNoProto: HELLO with a protocol version other than 2.
	ErrNoProto = errors.New("sorry, this protocol version is not supported.")
	// ErrTooMany: the proxy is at its client limit, or the tenant at its
	// connection limit (Redis's own text for maxclients).
	ErrTooMany = errors.New("max number of clients reached")
	// ErrRateLimit: a command to a db whose ops/s limit is spent.
	ErrRateLimit = errors.New("rate limit exceeded for this db")
	// ErrStarting: no command table could be loaded from a backend yet.
	ErrStarting = errors.New("the proxy has not reached any backend yet; retry shortly")
	// ErrSubFailover, ErrSubMoved, ErrSubDropped, ErrSubLost end a
	// subscribed connection whose db moved in a way that may have lost
	// messages (pubsub_move.go): the client must resubscribe.
	ErrSubFailover = errors.New("the db moved to another server (failover): resubscribe")
	ErrSubMoved    = errors.New("the db moved to another server (resize): resubscribe")
	ErrSubDropped  = errors.New("the db is no longer served (dropped): resubscribe after checking GET /v1/dbs")
	ErrSubLost     = errors.New("lost the connection to the db's server (a failover?): resubscribe")
	// ErrShutdown: the proxy is draining.
	ErrShutdown = errors.New("the proxy is shutting down; reconnect")
)

// protocolError is a malformed-request error; it wraps ErrProto.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }
func (e *protocolError) Unwrap() error { return ErrProto }

func protoErr(msg string) error { return &protocolError{msg: msg} }

// respError is the Redis error line (without "-" and CRLF) a tenant gets for
// err: the code chosen from the sentinel it wraps, then the message.
func respError(err error) string {
	code := "ERR"
	switch {
	case errors.Is(err, ErrNoAuth):
		code = "NOAUTH"
	case errors.Is(err, ErrWrongPass):
		code = "WRONGPASS"
	case errors.Is(err, ErrNoPerm):
		code = "NOPERM"
	case errors.Is(err, ErrOverQuota):
		code = "OOM"
	case errors.Is(err, ErrFenced):
		code = "READONLY"
	case errors.Is(err, ErrExecAbort):
		code = "EXECABORT"
	case errors.Is(err, ErrNoProto):
		code = "NOPROTO"
	case errors.Is(err, ErrNoReplica):
		code = "NOREPLICAS"
	case errors.Is(err, ErrHoldTimeout), errors.Is(err, ErrHoldFull):
		code = "TRYAGAIN"
	}
	return code + " " + err.Error()
}

// appendError appends respError(err) as an error reply.
func appendError(b []byte, err error) []byte {
	return redcon.AppendError(b, respError(err))
}

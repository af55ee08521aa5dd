// Package proxy is Granary's RESP endpoint: the address tenants' Redis
// clients connect to. It authenticates tenants, maps their db indexes to
// slots (a db number on a pair of Redis servers), sends reads to the
// replica and writes to the master, confirms writes on the replica when the
// db asks for it, enforces quota bans and resize holds, and confines every
// tenant to its own dbs.
//
// Routing state is an immutable snapshot built from metadb and swapped
// atomically on bus messages; nothing on the request path takes a lock
// shared by all clients. Each client connection is served by one goroutine
// that handles a whole pipeline at a time; commands are forwarded as the
// bytes the client sent, over shared, pipelined connections per (server,
// db) (one by default, BackendConns), and replies come back as raw bytes.
// Confirmed writes are group-committed: one WAIT confirms every write sent
// before it on its connection, and writes sent while a WAIT is blocked
// share the next one.
// Tenant and shared backend sockets are read and written with raw
// non-blocking system calls inside RawConn callbacks (sockin.go), which
// at pipeline 1 saves a system call a request and keeps Go's scheduler from
// handing the proxy between threads. The reply to a lone read or async
// write is written by the backend reader itself (a "direct" request, see
// directOK), so at pipeline 1 the client goroutine is not woken for it.
//
// At shutdown the proxy drains like vtgate's lameduck: it stops accepting
// but answers every command it has read, with its lease, bus and watchdog
// still running, so that a resize hold can end and confirmed writes can be
// acknowledged; then it stops them and closes its backends (Serve).
//
// The proxy's own decisions (which commands are allowed, how errors read,
// what a shared connection adds after a batch) live in commands.go,
// errors.go and marker.go; the backend side in backend.go, dconn.go and
// acl.go; the control-plane side in routes.go and lease.go.
package proxy

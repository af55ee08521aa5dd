// Package redistest is what tests against real Redis share: redis-server
// processes on free loopback ports, stopped (whole process group) when the
// test ends, and WaitFor, the one way a test waits on a condition.
package redistest

import (
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redisproc"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server started for one test.
type Server struct {
	*redisproc.Proc
}

// Start starts a redis-server with the extra "name value" config args and
// registers its shutdown with t.Cleanup. The test fails if it cannot start.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	return start(t, "", args)
}

// StartReplica starts a redis-server replicating from master and waits until
// its link is up and the master counts it in WAIT.
func StartReplica(t testing.TB, master *Server, args ...string) *Server {
	t.Helper()
	s := start(t, master.Addr, args)
	if err := redisproc.WaitLinkUp(t.Context(), s.Addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := redisproc.WaitReplicating(t.Context(), master.Addr, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return s
}

// StartPair starts a master and a replica that follows it.
func StartPair(t testing.TB, args ...string) (master, replica *Server) {
	t.Helper()
	master = Start(t, args...)
	return master, StartReplica(t, master, args...)
}

func start(t testing.TB, replicaOf string, args []string) *Server {
	p, err := redisproc.Start(t.Context(), redisproc.Config{Dir: t.TempDir(), ReplicaOf: replicaOf, Args: args})
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { p.Kill() })
	return &Server{Proc: p}
}

// Client returns a go-redis client for db 0 of s, closed at test end.
func (s *Server) Client(t testing.TB) *redis.Client {
	return s.ClientDB(t, 0)
}

// ClientDB returns a go-redis client for one db of s, closed at test end.
func (s *Server) ClientDB(t testing.TB, db int) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, DB: db})
	t.Cleanup(func() { c.Close() })
	return c
}

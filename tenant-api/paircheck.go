package tenantapi

import (
	"context"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"golang.org/x/sync/errgroup"
)

// probeTimeout bounds each dial, read and write to a server being checked,
// so a black-holed address cannot hold an admin call for long.
const probeTimeout = 2 * time.Second

// redactUser hides what stands before an @ (a URL's user and password) in
// an address echoed back in an error, which the audit stream records too.
func redactUser(s string) string {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return "…" + s[i:]
	}
	return s
}

// parseAddr checks a host:port given by the admin and writes it canonically
// (the port without leading zeros), so the same server is registered under
// one spelling.
func parseAddr(field, s string) (string, error) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(s))
	if err != nil || host == "" || len(host) > 253 || strings.ContainsAny(host, " \t/@") {
		return "", errorf(errBadRequest, "bad %s address %q: use host:port", field, clip(redactUser(s)))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", errorf(errBadRequest, "bad %s address %q: port must be 1-65535", field, clip(redactUser(s)))
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// probeBoth probes two servers at once.
func (s *Server) probeBoth(ctx context.Context, a, b string) (va, vb pools.ServerView, errA, errB error) {
	var g errgroup.Group
	g.Go(func() error { va, errA = s.probe(ctx, a); return nil })
	g.Go(func() error { vb, errB = s.probe(ctx, b); return nil })
	_ = g.Wait()
	return va, vb, errA, errB
}

// probe observes one Redis server for pools.CheckPair: what metadb knows of
// its address, then PING, INFO replication, CONFIG GET databases,
// maxmemory and append* (persistence), INFO keyspace. A server that does not answer PING is recorded
// in the view (CheckPair names it). The error is a metadb failure, or wraps
// pools.ErrPairCheck when the server answers PING but not an inspection.
func (s *Server) probe(ctx context.Context, addr string) (pools.ServerView, error) {
	v := pools.ServerView{Addr: addr}
	reg, err := s.store.AddrRegistration(ctx, addr)
	if err != nil {
		return v, err
	}
	if v.RegisteredAs = reg; reg != "" {
		return v, nil
	}
	c := redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true, PoolSize: 1, MaxRetries: -1,
		DialTimeout: probeTimeout, ReadTimeout: probeTimeout, WriteTimeout: probeTimeout,
		// A server being checked is plain Redis, never a managed endpoint.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 4*probeTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		v.Err = err.Error()
		return v, nil
	}
	v.Reachable = true
	fail := func(what string, err error) error {
		return errorf(pools.ErrPairCheck, "%s answers PING but not %s: %v", addr, what, err)
	}
	repl, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return v, fail("INFO replication", err)
	}
	f := infoFields(repl)
	v.Role, v.ReplID, v.MasterHost = f["role"], f["master_replid"], f["master_host"]
	v.LinkUp = f["master_link_status"] == "up"
	v.MasterPort, _ = strconv.Atoi(f["master_port"])
	databases, err := configInt(ctx, c, "databases")
	if err != nil {
		return v, fail("CONFIG GET databases", err)
	}
	v.Databases = int(databases)
	if v.MaxMemory, err = configInt(ctx, c, "maxmemory"); err != nil {
		return v, fail("CONFIG GET maxmemory", err)
	}
	aof, err := c.ConfigGet(ctx, "append*").Result()
	if err != nil {
		return v, fail("CONFIG GET append*", err)
	}
	v.AppendOnly, v.AppendFsync = aof["appendonly"], aof["appendfsync"]
	ks, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		return v, fail("INFO keyspace", err)
	}
	v.NonEmptyDBs = nonEmptyDBs(ks)
	return v, nil
}

// infoFields parses the "key:value" lines of an INFO section.
func infoFields(info string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// nonEmptyDBs lists the dbs of an INFO keyspace section that hold keys
// ("db3:keys=12,expires=0,avg_ttl=0"), sorted.
func nonEmptyDBs(info string) []int {
	var out []int
	for k, v := range infoFields(info) {
		n, err := strconv.Atoi(strings.TrimPrefix(k, "db"))
		if err != nil || !strings.HasPrefix(k, "db") {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			if name, val, _ := strings.Cut(kv, "="); name == "keys" {
				if keys, err := strconv.ParseInt(val, 10, 64); err == nil && keys > 0 {
					out = append(out, n)
				}
			}
		}
	}
	sort.Ints(out)
	return out
}

func configInt(ctx context.Context, c *redis.Client, name string) (int64, error) {
	m, err := c.ConfigGet(ctx, name).Result()
	if err != nil {
		return 0, err
	}
	val, ok := m[name]
	if !ok {
		return 0, errorf(pools.ErrPairCheck, "no %s in the reply", name)
	}
	return strconv.ParseInt(val, 10, 64)
}

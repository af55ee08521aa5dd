package proxy

import (
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// TestGoRedisCompat drives go-redis v9 with default options and a
// redis://user:pass@host:port/n URL through every data type, expiries,
// pipelines, MULTI/EXEC with WATCH, BLPOP, pub/sub and EVAL.
func TestGoRedisCompat(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	e.db("acme", metadb.WriteConfirmed)
	db1 := e.db("acme", metadb.WriteAsync)
	c := e.client("acme", pass, db1.Index)
	ctx := e.ctx
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	eq := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}

	t.Run("strings", func(t *testing.T) {
		must(c.Set(ctx, "s", "hello", 0).Err())
		eq("get", c.Get(ctx, "s").Val(), "hello")
		eq("append", c.Append(ctx, "s", " world").Val(), 11)
		eq("incr", c.Incr(ctx, "n").Val(), 1)
		eq("incrby", c.IncrBy(ctx, "n", 41).Val(), 42)
		must(c.MSet(ctx, "a", "1", "b", "2").Err())
		eq("mget", c.MGet(ctx, "a", "b", "nope").Val(), []any{"1", "2", nil})
		_, err := c.Get(ctx, "nope").Result()
		eq("missing", errors.Is(err, redis.Nil), true)
		eq("strlen", c.StrLen(ctx, "s").Val(), 11)
	})
	t.Run("hashes", func(t *testing.T) {
		must(c.HSet(ctx, "h", "f1", "v1", "f2", "v2").Err())
		eq("hget", c.HGet(ctx, "h", "f1").Val(), "v1")
		eq("hgetall", c.HGetAll(ctx, "h").Val(), map[string]string{"f1": "v1", "f2": "v2"})
		eq("hincr", c.HIncrBy(ctx, "h", "n", 5).Val(), 5)
		eq("hlen", c.HLen(ctx, "h").Val(), 3)
	})
	t.Run("lists", func(t *testing.T) {
		must(c.RPush(ctx, "l", "a", "b", "c").Err())
		eq("lrange", c.LRange(ctx, "l", 0, -1).Val(), []string{"a", "b", "c"})
		eq("lpop", c.LPop(ctx, "l").Val(), "a")
		eq("llen", c.LLen(ctx, "l").Val(), 2)
	})
	t.Run("sets", func(t *testing.T) {
		must(c.SAdd(ctx, "set", "x", "y", "z").Err())
		eq("scard", c.SCard(ctx, "set").Val(), 3)
		eq("sismember", c.SIsMember(ctx, "set", "y").Val(), true)
		must(c.SAdd(ctx, "set2", "y", "w").Err())
		eq("sinter", c.SInter(ctx, "set", "set2").Val(), []string{"y"})
	})
	t.Run("sorted sets", func(t *testing.T) {
		must(c.ZAdd(ctx, "z", redis.Z{Score: 2, Member: "b"}, redis.Z{Score: 1, Member: "a"}).Err())
		eq("zrange", c.ZRange(ctx, "z", 0, -1).Val(), []string{"a", "b"})
		eq("zscore", c.ZScore(ctx, "z", "b").Val(), 2)
		eq("zincr", c.ZIncrBy(ctx, "z", 5, "a").Val(), 6)
		eq("zrevrange", c.ZRevRange(ctx, "z", 0, 0).Val(), []string{"a"})
	})
	t.Run("streams", func(t *testing.T) {
		id := c.XAdd(ctx, &redis.XAddArgs{Stream: "st", Values: map[string]any{"k": "v"}}).Val()
		if id == "" {
			t.Fatal("xadd returned no id")
		}
		eq("xlen", c.XLen(ctx, "st").Val(), 1)
		msgs := c.XRange(ctx, "st", "-", "+").Val()
		eq("xrange", len(msgs) == 1 && msgs[0].Values["k"] == "v", true)
		must(c.XGroupCreate(ctx, "st", "g", "0").Err())
		res := c.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{"st", ">"}, Count: 1}).Val()
		eq("xreadgroup", len(res) == 1 && len(res[0].Messages) == 1, true)
		eq("xack", c.XAck(ctx, "st", "g", id).Val(), 1)
	})
	t.Run("expiries", func(t *testing.T) {
		must(c.Set(ctx, "e", "v", 10*time.Second).Err())
		if ttl := c.TTL(ctx, "e").Val(); ttl <= 0 || ttl > 10*time.Second {
			t.Fatalf("ttl %v", ttl)
		}
		must(c.PExpire(ctx, "e", 50*time.Millisecond).Err())
		redistest.WaitFor(t, 3*time.Second, "the key to expire", func() bool { return c.Exists(ctx, "e").Val() == 0 })
		must(c.Set(ctx, "p", "v", 0).Err())
		eq("persist", c.Expire(ctx, "p", time.Minute).Val() && c.Persist(ctx, "p").Val(), true)
	})
	t.Run("pipeline", func(t *testing.T) {
		cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < 100; i++ {
				p.Set(ctx, "pk"+strconv.Itoa(i), i, 0)
				p.Get(ctx, "pk"+strconv.Itoa(i))
				p.Incr(ctx, "pc")
			}
			return nil
		})
		must(err)
		for i := 0; i < 100; i++ {
			eq("pipelined get", cmds[3*i+1].(*redis.StringCmd).Val(), strconv.Itoa(i))
			eq("pipelined incr", cmds[3*i+2].(*redis.IntCmd).Val(), i+1)
		}
	})
	t.Run("multi exec watch", func(t *testing.T) {
		must(c.Set(ctx, "w", "1", 0).Err())
		incr := func(interfere bool) error {
			return c.Watch(ctx, func(tx *redis.Tx) error {
				n, err := tx.Get(ctx, "w").Int()
				if err != nil {
					return err
				}
				if interfere {
					if err := c.Set(ctx, "w", "100", 0).Err(); err != nil {
						return err
					}
				}
				_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					p.Set(ctx, "w", n+1, 0)
					return nil
				})
				return err
			}, "w")
		}
		must(incr(false))
		eq("after tx", c.Get(ctx, "w").Val(), "2")
		eq("conflict aborts", errors.Is(incr(true), redis.TxFailedErr), true)
		eq("interferer won", c.Get(ctx, "w").Val(), "100")
		cmds, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, "tx1")
			p.Incr(ctx, "tx1")
			return nil
		})
		must(err)
		eq("tx result", cmds[1].(*redis.IntCmd).Val(), 2)
	})
	t.Run("blpop", func(t *testing.T) {
		got := make(chan []string, 1)
		go func() { got <- c.BLPop(ctx, 5*time.Second, "bl").Val() }()
		e.waitBlocked(1)
		must(c.RPush(ctx, "bl", "item").Err())
		select {
		case v := <-got:
			eq("blpop", v, []string{"bl", "item"})
		case <-time.After(5 * time.Second):
			t.Fatal("blpop did not return")
		}
		start := time.Now()
		_, err := c.BLPop(ctx, time.Second, "empty").Result()
		eq("blpop timeout", errors.Is(err, redis.Nil), true)
		if time.Since(start) < 900*time.Millisecond {
			t.Fatal("blpop returned before its timeout")
		}
	})
	t.Run("pubsub", func(t *testing.T) {
		sub := c.Subscribe(ctx, "news")
		defer sub.Close()
		psub := c.PSubscribe(ctx, "n*")
		defer psub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := psub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		eq("publish", c.Publish(ctx, "news", "hi").Val(), 2)
		m, err := sub.ReceiveMessage(ctx)
		must(err)
		eq("message", m.Channel+"="+m.Payload, "news=hi")
		pm, err := psub.ReceiveMessage(ctx)
		must(err)
		eq("pmessage", pm.Pattern+" "+pm.Channel+"="+pm.Payload, "n* news=hi")
		eq("pubsub channels", c.PubSubChannels(ctx, "*").Val(), []string{"news"})
		eq("numsub", c.PubSubNumSub(ctx, "news").Val(), map[string]int64{"news": 1})
	})
	t.Run("eval", func(t *testing.T) {
		eq("eval", c.Eval(ctx, "redis.call('set', KEYS[1], ARGV[1]); return redis.call('get', KEYS[1])", []string{"ek"}, "ev").Val(), "ev")
		sha := c.ScriptLoad(ctx, "return ARGV[1]").Val()
		eq("evalsha", c.EvalSha(ctx, sha, nil, "x").Val(), "x")
		eq("script exists", c.ScriptExists(ctx, sha).Val(), []bool{true})
		eq("eval_ro", c.EvalRO(ctx, "return redis.call('get', KEYS[1])", []string{"ek"}).Val(), "ev")
	})
	t.Run("keyspace", func(t *testing.T) {
		n := c.DBSize(ctx).Val()
		if n < 10 {
			t.Fatalf("dbsize %d", n)
		}
		keys, _, err := c.Scan(ctx, 0, "pk*", 1000).Result()
		must(err)
		if len(keys) == 0 {
			t.Fatal("scan found nothing")
		}
		eq("keys", len(c.Keys(ctx, "pk1?").Val()), 10)
		eq("type", c.Type(ctx, "z").Val(), "zset")
		eq("info", strings.Contains(c.Info(ctx).Val(), "maxmemory:"+strconv.Itoa(64<<20)), true)
		eq("config get", c.ConfigGet(ctx, "maxmemory").Val(), map[string]string{"maxmemory": strconv.Itoa(64 << 20)})
		eq("client id", c.ClientID(ctx).Val() > 0, true)
		must(c.FlushDB(ctx).Err())
		eq("dbsize after flushdb", c.DBSize(ctx).Val(), 0)
	})
}

// TestRedisCliAndBenchmark runs the real redis-cli and redis-benchmark
// binaries through the proxy.
func TestRedisCliAndBenchmark(t *testing.T) {
	e := newEnv(t)
	pass := e.tenant("acme")
	db := e.db("acme", metadb.WriteConfirmed)
	host, port := splitAddr(e.addr)
	cli := func(args ...string) string {
		t.Helper()
		a := append([]string{"-h", host, "-p", port, "--user", "acme", "--pass", pass, "--no-auth-warning", "-n", strconv.Itoa(db.Index)}, args...)
		out, err := exec.Command("redis-cli", a...).CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "PONG"},
		{[]string{"SET", "greeting", "hello world"}, "OK"},
		{[]string{"GET", "greeting"}, "hello world"},
		{[]string{"HSET", "h", "a", "1"}, "1"},
		{[]string{"LPUSH", "l", "x", "y"}, "2"},
		{[]string{"ZADD", "z", "1", "m"}, "1"},
		{[]string{"SADD", "s", "m"}, "1"},
		{[]string{"XADD", "st", "1-1", "f", "v"}, "1-1"},
		{[]string{"EXPIRE", "greeting", "100"}, "1"},
		{[]string{"EVAL", "return redis.call('get', KEYS[1])", "1", "greeting"}, "hello world"},
		{[]string{"DBSIZE"}, "6"},
		{[]string{"SELECT", "7"}, "ERR DB index is out of range"},
		{[]string{"CONFIG", "GET", "maxmemory-policy"}, "maxmemory-policy\nnoeviction"},
	} {
		if got := cli(tc.args...); got != tc.want {
			t.Errorf("redis-cli %v: got %q, want %q", tc.args, got, tc.want)
		}
	}
	// Pipe mode: raw protocol from stdin, many commands in one stream.
	var in strings.Builder
	for i := 0; i < 1000; i++ {
		in.Write(appendCommandStr(nil, "SET", "pipe:"+strconv.Itoa(i), strconv.Itoa(i)))
	}
	cmd := exec.Command("redis-cli", "-h", host, "-p", port, "--user", "acme", "--pass", pass, "--no-auth-warning", "-n", strconv.Itoa(db.Index), "--pipe")
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "errors: 0, replies: 1000") {
		t.Fatalf("redis-cli --pipe: %v\n%s", err, out)
	}

	// redis-benchmark over a spread of commands, pipelined and not.
	for _, pipe := range []string{"1", "16"} {
		out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "--user", "acme", "-a", pass,
			"--dbnum", strconv.Itoa(db.Index), "-c", "20", "-n", "2000", "-P", pipe, "-q",
			"-t", "ping,set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		s := string(out)
		for _, test := range []string{"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP", "RPOP", "SADD", "HSET", "SPOP", "ZADD", "ZPOPMIN", "LRANGE_100", "MSET"} {
			if !strings.Contains(s, test+": ") && !strings.Contains(s, test+" (") {
				t.Errorf("redis-benchmark -P %s: no result for %s:\n%s", pipe, test, s)
			}
		}
		if strings.Contains(strings.ToLower(s), "error") {
			t.Errorf("redis-benchmark -P %s reported errors:\n%s", pipe, s)
		}
	}
	if n, _ := e.slot(db).DBSize(e.ctx).Result(); n < 1000 {
		t.Fatalf("slot db holds %d keys after the runs", n)
	}
}

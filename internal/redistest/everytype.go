package redistest

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// QueueEveryType queues in pl a key of every type Redis has, in its small
// and its large encoding, the way the export, restore and RDB tests need
// them: strings (an integer, a short, a long one with a TTL, binary
// bytes), lists, sets (an intset, a small and a big one), sorted sets,
// hashes ("hash:small" expires in 90 s, "zset:big" in 2 h) and a stream
// ("stream") with a consumer group that has read some of it. big is the
// element count of the large encodings.
func QueueEveryType(ctx context.Context, pl redis.Pipeliner, big int) {
	pl.Set(ctx, "str:int", "12345", 0)
	pl.Set(ctx, "str:short", "hello", 0)
	pl.Set(ctx, "str:long", strings.Repeat("x", 5000), time.Hour)
	pl.Set(ctx, "str:bin", "\x00\xff\r\n", 0)
	pl.RPush(ctx, "list:small", "a", "b", 3)
	pl.SAdd(ctx, "set:ints", 1, 2, 3, -7)
	pl.SAdd(ctx, "set:small", "a", "b")
	pl.ZAdd(ctx, "zset:small", redis.Z{Score: 1.5, Member: "a"}, redis.Z{Score: -2, Member: "b"})
	pl.HSet(ctx, "hash:small", "a", "1", "b", "two")
	pl.PExpire(ctx, "hash:small", 90*time.Second)
	for i := range big {
		pl.RPush(ctx, "list:big", fmt.Sprintf("element-%d-%s", i, strings.Repeat("y", 100)))
		pl.SAdd(ctx, "set:big", fmt.Sprintf("member-%d", i))
		pl.ZAdd(ctx, "zset:big", redis.Z{Score: float64(i) / 3, Member: fmt.Sprintf("m%d", i)})
		pl.HSet(ctx, "hash:big", fmt.Sprintf("f%d", i), strings.Repeat("v", i%200))
	}
	pl.Expire(ctx, "zset:big", 2*time.Hour)
	for i := range 50 {
		pl.XAdd(ctx, &redis.XAddArgs{Stream: "stream", Values: []any{"n", i}})
	}
	pl.XGroupCreate(ctx, "stream", "g", "0")
	pl.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"stream", ">"}, Count: 10})
}

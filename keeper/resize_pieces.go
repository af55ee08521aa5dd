package keeper

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the copy moves keys (see the comment at the top of resize_copy.go):
// copyKeys sorts a batch into small keys, sent in byte-bounded DUMP /
// RESTORE pipelines, and big keys, sent by copyBig in pages. No command it
// sends makes a server walk more than a page of one key.

// keyInfo is what the copy knows of a key before moving it.
type keyInfo struct {
	name  string
	typ   string // TYPE's answer ("none": gone); "" for a small key
	mem   int64  // MEMORY USAGE (sampled for aggregates)
	elems int64  // STRLEN or the element count; only read for keys near the bounds
}

func (k keyInfo) big() bool {
	return k.typ != "none" && (k.mem > bigKeyBytes || (k.typ != "string" && k.elems > bigKeyElems))
}

// lengthOf is the O(1) command that sizes a key of typ.
func lengthOf(ctx context.Context, p redis.Pipeliner, typ, key string) *redis.IntCmd {
	switch typ {
	case "string":
		return p.StrLen(ctx, key)
	case "hash":
		return p.HLen(ctx, key)
	case "set":
		return p.SCard(ctx, key)
	case "zset":
		return p.ZCard(ctx, key)
	case "list":
		return p.LLen(ctx, key)
	case "stream":
		return p.XLen(ctx, key)
	}
	return nil
}

// inspectKeys reads the size of keys on c: MEMORY USAGE (SAMPLES 5, O(1)
// per key; no answer for a key that is gone), then the type and length of
// those near the bounds. A small key's type is left empty: it goes by DUMP
// whatever it is.
func inspectKeys(ctx context.Context, c *redis.Client, keys []string) ([]keyInfo, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.MemoryUsage(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("inspect keys: %w", err)
	}
	out := make([]keyInfo, len(keys))
	var near []int
	for i, k := range keys {
		mem, err := cmds[i].(*redis.IntCmd).Result()
		out[i] = keyInfo{name: k, mem: mem}
		switch {
		case errors.Is(err, redis.Nil):
			out[i].typ = "none"
		case mem > bigKeyBytes/4:
			near = append(near, i)
		}
	}
	if len(near) == 0 {
		return out, nil
	}
	types, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range near {
			p.Type(ctx, out[i].name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inspect keys: %w", err)
	}
	lens := make([]*redis.IntCmd, len(near))
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for j, i := range near {
			out[i].typ = types[j].(*redis.StatusCmd).Val()
			lens[j] = lengthOf(ctx, p, out[i].typ, out[i].name)
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("inspect keys: %w", err)
	}
	for j, i := range near {
		if lens[j] != nil {
			out[i].elems = lens[j].Val()
		}
	}
	return out, nil
}

func inspectOne(ctx context.Context, c *redis.Client, key string) (keyInfo, error) {
	ks, err := inspectKeys(ctx, c, []string{key})
	if err != nil {
		return keyInfo{}, err
	}
	return ks[0], nil
}

// copyKeys copies keys from the session's reader to the target: gone keys
// are unlinked there, small ones go in RESTORE pipelines of at most
// copyBatchBytes, big ones one by one in pages.
func (s *copySession) copyKeys(ctx context.Context, keys []string) error {
	ks, err := inspectKeys(ctx, s.read, keys)
	if err != nil {
		return err
	}
	var gone, batch []string
	var bytes int64
	flush := func() error {
		err := s.restoreSmall(ctx, batch)
		batch, bytes = batch[:0], 0
		return err
	}
	for _, k := range ks {
		switch {
		case k.typ == "none":
			gone = append(gone, k.name)
		case k.big():
			if err := s.owns(); err != nil {
				return err
			}
			if err := s.copyBig(ctx, k); err != nil {
				return err
			}
		default:
			if len(batch) > 0 && bytes+k.mem > copyBatchBytes {
				if err := flush(); err != nil {
					return err
				}
			}
			batch = append(batch, k.name)
			bytes += k.mem
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if len(gone) > 0 {
		if err := s.dst.Unlink(ctx, gone...).Err(); err != nil {
			return fmt.Errorf("unlink gone keys on the target: %w", err)
		}
	}
	return nil
}

// restoreSmall copies keys with one DUMP + PEXPIRETIME pipeline on the
// reader and one RESTORE … ABSTTL REPLACE pipeline on the target. A key gone
// between the two reads is unlinked on the target.
func (s *copySession) restoreSmall(ctx context.Context, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	cmds, err := s.read.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Dump(ctx, k)
			p.PExpireTime(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("dump %d keys: %w", len(keys), err)
	}
	if _, err := s.dst.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			payload, err := cmds[2*i].(*redis.StringCmd).Result()
			if errors.Is(err, redis.Nil) {
				p.Unlink(ctx, k)
				continue
			}
			args := []any{"RESTORE", k, 0, payload, "REPLACE"}
			if at := cmds[2*i+1].(*redis.DurationCmd).Val(); at > 0 {
				args = []any{"RESTORE", k, at.Milliseconds(), payload, "REPLACE", "ABSTTL"}
			}
			p.Do(ctx, args...)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("restore %d keys: %w", len(keys), err)
	}
	if s.onCopy != nil {
		s.onCopy(len(keys))
	}
	return nil
}

// copyBig copies one big key in pages into a temporary key of the target,
// then one MULTI replaces the key with it and sets its expiry. A key
// changed meanwhile is dirty and copied again; a key gone meanwhile leaves
// a partial copy that its dirty pass unlinks. Types without a paging
// command (streams, modules) go by DUMP.
func (s *copySession) copyBig(ctx context.Context, k keyInfo) error {
	s.bigMu.Lock()
	defer s.bigMu.Unlock()
	tmp := s.tmpPrefix + k.name
	if err := s.dst.Unlink(ctx, tmp).Err(); err != nil {
		return fmt.Errorf("clear temporary key: %w", err)
	}
	var err error
	switch k.typ {
	case "string":
		err = s.pagesString(ctx, k.name, tmp)
	case "hash", "set", "zset":
		err = s.pagesScan(ctx, k.typ, k.name, tmp)
	case "list":
		err = s.pagesList(ctx, k.name, tmp)
	default:
		return s.restoreSmall(ctx, []string{k.name})
	}
	if err != nil {
		return fmt.Errorf("copy big key (%s of %d bytes): %w", k.typ, k.mem, err)
	}
	at, err := s.read.PExpireTime(ctx, k.name).Result()
	if err != nil {
		return fmt.Errorf("read expiry of a big key: %w", err)
	}
	n, err := s.dst.Exists(ctx, tmp).Result()
	if err != nil {
		return err
	}
	if n == 0 { // gone before its first page
		return s.dst.Unlink(ctx, k.name).Err()
	}
	// UNLINK first: RENAME onto an existing key would free the old value
	// in the target's main thread.
	if _, err := s.dst.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Unlink(ctx, k.name)
		p.Rename(ctx, tmp, k.name)
		if at > 0 {
			p.PExpireAt(ctx, k.name, time.UnixMilli(at.Milliseconds()))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("rename the copy of a big key into place: %w", err)
	}
	if s.onCopy != nil {
		s.onCopy(1)
	}
	return nil
}

func (s *copySession) pagesString(ctx context.Context, key, tmp string) error {
	for off := int64(0); ; off += pieceBytes {
		v, err := s.read.GetRange(ctx, key, off, off+pieceBytes-1).Result()
		if err != nil {
			return err
		}
		if v == "" {
			return nil
		}
		if err := s.dst.Append(ctx, tmp, v).Err(); err != nil {
			return err
		}
		if int64(len(v)) < pieceBytes {
			return nil
		}
	}
}

// pagesScan copies a hash, set or sorted set with its SCAN command; the
// elements present for the whole scan are all returned, repeats are
// harmless.
func (s *copySession) pagesScan(ctx context.Context, typ, key, tmp string) error {
	var cursor uint64
	for {
		if err := s.owns(); err != nil {
			return err
		}
		var page []string
		var err error
		switch typ {
		case "hash":
			page, cursor, err = s.read.HScan(ctx, key, cursor, "", pieceElems).Result()
		case "set":
			page, cursor, err = s.read.SScan(ctx, key, cursor, "", pieceElems).Result()
		default:
			page, cursor, err = s.read.ZScan(ctx, key, cursor, "", pieceElems).Result()
		}
		if err != nil {
			return err
		}
		if len(page) > 0 {
			args := make([]any, 0, len(page)+2)
			switch typ {
			case "hash":
				args = append(args, "HSET", tmp)
				for _, v := range page {
					args = append(args, v)
				}
			case "set":
				args = append(args, "SADD", tmp)
				for _, v := range page {
					args = append(args, v)
				}
			default: // ZSCAN answers member, score: ZADD wants score, member
				args = append(args, "ZADD", tmp)
				for i := 0; i+1 < len(page); i += 2 {
					args = append(args, page[i+1], page[i])
				}
			}
			if err := s.dst.Do(ctx, args...).Err(); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}

func (s *copySession) pagesList(ctx context.Context, key, tmp string) error {
	for i := int64(0); ; i += pieceElems {
		if err := s.owns(); err != nil {
			return err
		}
		page, err := s.read.LRange(ctx, key, i, i+pieceElems-1).Result()
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		args := make([]any, 0, len(page))
		for _, v := range page {
			args = append(args, v)
		}
		if err := s.dst.RPush(ctx, tmp, args...).Err(); err != nil {
			return err
		}
		if len(page) < pieceElems {
			return nil
		}
	}
}

// errReplicaBehind: the replica did not reach the master's offset in time.
var errReplicaBehind = errors.New("source replica is behind its master")

// replicaSyncTimeout bounds syncReplica's wait.
const replicaSyncTimeout = 5 * time.Second

// syncReplica returns once the reader has processed everything the source
// master had sent when it was called (a no-op when the reader is the
// master). It asks the master for INFO replication only.
func (s *copySession) syncReplica(ctx context.Context) error {
	if !s.fromReplica {
		return nil
	}
	return syncReplica(ctx, s.src, s.read)
}

// syncReplica returns once replica has processed everything master had
// sent when it was called, or errReplicaBehind after replicaSyncTimeout.
func syncReplica(ctx context.Context, master, replica *redis.Client) error {
	want, err := replOffset(ctx, master, "master_repl_offset")
	if err != nil {
		return fmt.Errorf("source master offset: %w", err)
	}
	deadline := time.Now().Add(replicaSyncTimeout)
	wait := 100 * time.Microsecond
	for {
		got, err := replOffset(ctx, replica, "slave_repl_offset")
		if err != nil {
			return fmt.Errorf("source replica offset: %w", err)
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: at %d, master at %d after %v", errReplicaBehind, got, want, replicaSyncTimeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
}

func replicationInfo(ctx context.Context, c *redis.Client) (map[string]string, error) {
	txt, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(txt, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			out[k] = v
		}
	}
	return out, nil
}

func replOffset(ctx context.Context, c *redis.Client, field string) (int64, error) {
	info, err := replicationInfo(ctx, c)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(info[field], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("INFO replication has no %s", field)
	}
	return n, nil
}

// readsFromReplica tells whether replica replicates master (same replication id,
// link up), so that it may serve the copy's reads.
func readsFromReplica(ctx context.Context, master, replica *redis.Client) bool {
	m, err := replicationInfo(ctx, master)
	if err != nil {
		return false
	}
	r, err := replicationInfo(ctx, replica)
	if err != nil {
		return false
	}
	return r["role"] == "slave" && r["master_link_status"] == "up" && r["master_replid"] != "" &&
		r["master_replid"] == m["master_replid"]
}

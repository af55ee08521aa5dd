package keeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/redis/go-redis/v9"
)

// keyScan walks one db with SCAN and reads every key's TYPE, MEMORY USAGE
// (Redis's default of 5 sampled elements, so a huge collection costs the
// same as a small one) and its type's length command, keeping the biggest
// keys by bytes and by elements. It is the executor of a key report.
//
// Each round trip carries three stages of a small pipeline: SCAN for the
// next batch, TYPE and MEMORY USAGE of the batch the previous SCAN
// returned, and the length commands of the batch before that (whose types
// are now known). The server never sees more than about three batches of
// commands at once, each O(1) (a length is O(1) for every type), so a scan
// of any size never blocks the server for longer than one small pipeline.
type keyScan struct {
	batch   int
	maxKeys int64
	maxTime time.Duration
	top     int
}

// keyScanResult is one finished scan.
type keyScanResult struct {
	keys       int64 // DBSIZE at the start
	scanned    int64 // keys SCAN returned (duplicates included)
	complete   bool
	partial    string
	byBytes    []metadb.BigKey
	byElements []metadb.BigKey
}

// lengthCommand is the O(1) length command of each type; strings count
// bytes.
var lengthCommand = map[string]string{
	"string": "strlen", "list": "llen", "hash": "hlen", "set": "scard", "zset": "zcard", "stream": "xlen",
}

// run scans db number db on conn, calling progress with the keys scanned
// so far about every progressEvery; an error from progress ends the scan
// with that error. It stops, partial, after maxKeys keys or maxTime.
func (s keyScan) run(ctx context.Context, conn *redis.Conn, db int, progressEvery time.Duration, progress func(scanned int64) error) (keyScanResult, error) {
	t0 := time.Now()
	var dbsize *redis.IntCmd
	if _, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Select(ctx, db)
		dbsize = p.DBSize(ctx)
		return nil
	}); err != nil {
		return keyScanResult{}, fmt.Errorf("select db %d: %w", db, err)
	}
	res := keyScanResult{keys: dbsize.Val()}
	byBytes, byElems := newBigTop(s.top), newBigTop(s.top)
	var (
		cursor   uint64
		scanning = true
		fresh    []string        // keys of the last SCAN: TYPE and MEMORY USAGE next
		typed    []metadb.BigKey // keys with type and bytes: their length next
		lastProg = time.Now()
	)
	for scanning || len(fresh) > 0 || len(typed) > 0 {
		if scanning && res.scanned >= s.maxKeys {
			scanning, res.partial = false, fmt.Sprintf("stopped after %d keys (the cap)", res.scanned)
		}
		if scanning && time.Since(t0) > s.maxTime {
			scanning, res.partial = false, fmt.Sprintf("stopped after %v (the time cap)", s.maxTime)
		}
		var (
			sc    *redis.ScanCmd
			types = make([]*redis.StatusCmd, len(fresh))
			mems  = make([]*redis.IntCmd, len(fresh))
			lens  = make([]*redis.IntCmd, len(typed))
		)
		_, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
			if scanning {
				sc = p.Scan(ctx, cursor, "", int64(s.batch))
			}
			for i, k := range fresh {
				types[i] = p.Type(ctx, k)
				mems[i] = p.MemoryUsage(ctx, k)
			}
			for i, bk := range typed {
				if c, ok := lengthCommand[bk.Type]; ok {
					lens[i] = redis.NewIntCmd(ctx, c, bk.Key)
					_ = p.Process(ctx, lens[i])
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
			return keyScanResult{}, fmt.Errorf("scan db %d: %w", db, err)
		}
		for i, bk := range typed {
			bk.Elements = -1
			if lens[i] != nil {
				if n, err := lens[i].Result(); err == nil {
					bk.Elements = n
				} else if !isWrongType(err) {
					return keyScanResult{}, fmt.Errorf("length of a key: %w", err)
				}
			}
			byBytes.offer(bk, bk.Bytes)
			if bk.Type != "string" && bk.Elements >= 0 {
				byElems.offer(bk, bk.Elements)
			}
		}
		typed = typed[:0]
		for i, k := range fresh {
			tp, err := types[i].Result()
			if err != nil {
				return keyScanResult{}, fmt.Errorf("type of a key: %w", err)
			}
			n, err := mems[i].Result()
			if errors.Is(err, redis.Nil) || tp == "none" {
				continue // deleted or expired since SCAN saw it
			}
			if err != nil {
				return keyScanResult{}, fmt.Errorf("memory usage of a key: %w", err)
			}
			typed = append(typed, metadb.BigKey{Key: k, Type: tp, Bytes: n})
		}
		fresh = nil
		if scanning {
			keys, next, err := sc.Result()
			if err != nil {
				return keyScanResult{}, fmt.Errorf("scan db %d: %w", db, err)
			}
			fresh, cursor = keys, next
			res.scanned += int64(len(keys))
			if next == 0 {
				scanning, res.complete = false, res.partial == ""
			}
		}
		if time.Since(lastProg) >= progressEvery {
			lastProg = time.Now()
			if err := progress(res.scanned); err != nil {
				return keyScanResult{}, err
			}
		}
	}
	res.byBytes, res.byElements = byBytes.sorted(), byElems.sorted()
	return res, nil
}

// isWrongType: a key whose type changed between TYPE and its length
// command answers WRONGTYPE; it is reported without a length.
func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

// bigTop keeps the n keys of largest value offered, one entry per key name
// (SCAN may return a key twice).
type bigTop struct {
	n    int
	keys []metadb.BigKey
	vals []int64
}

func newBigTop(n int) *bigTop { return &bigTop{n: n} }

func (t *bigTop) offer(k metadb.BigKey, v int64) {
	if len(t.keys) == t.n && v <= t.vals[len(t.vals)-1] {
		return
	}
	for i := range t.keys {
		if t.keys[i].Key == k.Key {
			t.keys = slices.Delete(t.keys, i, i+1)
			t.vals = slices.Delete(t.vals, i, i+1)
			break
		}
	}
	i, _ := slices.BinarySearchFunc(t.vals, v, func(a, b int64) int {
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	t.keys = slices.Insert(t.keys, i, k)
	t.vals = slices.Insert(t.vals, i, v)
	if len(t.keys) > t.n {
		t.keys, t.vals = t.keys[:t.n], t.vals[:t.n]
	}
}

// sorted is the kept keys, largest first.
func (t *bigTop) sorted() []metadb.BigKey {
	return append([]metadb.BigKey{}, t.keys...)
}

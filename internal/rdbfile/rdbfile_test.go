package rdbfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// fill writes every type Redis has, in its small and large encodings, and
// some TTLs.
func fill(t *testing.T, c *redis.Client) {
	ctx := t.Context()
	pl := c.Pipeline()
	redistest.QueueEveryType(ctx, pl, 1000)
	if _, err := pl.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

// export writes c's db as a file with a Writer, the way the keeper does.
func export(t *testing.T, c *redis.Client) []byte {
	ctx := t.Context()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		dump, err := c.Dump(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		at, err := c.Do(ctx, "PEXPIRETIME", k).Int64()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Add(k, []byte(dump), at); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Keys() != int64(len(keys)) || w.Bytes() != int64(buf.Len()) {
		t.Fatalf("writer counted %d keys, %d bytes; wrote %d keys, %d bytes", w.Keys(), w.Bytes(), len(keys), buf.Len())
	}
	return buf.Bytes()
}

// digests is each key's DEBUG DIGEST-VALUE (independent of the order of a
// hash table) and whether it has a TTL.
func digests(t *testing.T, c *redis.Client) map[string]string {
	ctx := t.Context()
	out := map[string]string{}
	for _, k := range c.Keys(ctx, "*").Val() {
		d, err := c.Do(ctx, "DEBUG", "DIGEST-VALUE", k).StringSlice()
		if err != nil {
			t.Fatal(err)
		}
		ttl := c.PTTL(ctx, k).Val() > 0
		out[k] = fmt.Sprintf("%s ttl=%v", d[0], ttl)
	}
	return out
}

// TestWriterLoads: a file written from a real server's DUMP payloads loads
// in a plain redis-server with every key, value and TTL, and passes Check.
func TestWriterLoads(t *testing.T) {
	src := redistest.Start(t, "enable-debug-command", "yes")
	c := src.Client(t)
	fill(t, c)
	file := export(t, c)
	if _, err := Check(bytes.NewReader(file)); err != nil {
		t.Fatalf("Check of a written file: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "export.rdb"), file, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := redistest.Start(t, "enable-debug-command", "yes", "dir", dir, "dbfilename", "export.rdb")
	want, got := digests(t, c), digests(t, dst.Client(t))
	if len(want) == 0 || fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("loaded file differs:\nwant %v\ngot  %v", want, got)
	}
	if ttl := dst.Client(t).PTTL(t.Context(), "hash:small").Val(); ttl < 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("hash:small TTL after load = %v, want about 90s", ttl)
	}
}

// TestEmptyWriterLoads: a db with no keys gives a file redis-server loads.
func TestEmptyWriterLoads(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "e.rdb"), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if n := redistest.Start(t, "dir", dir, "dbfilename", "e.rdb").Client(t).DBSize(t.Context()).Val(); n != 0 {
		t.Fatalf("%d keys in an empty file", n)
	}
}

// TestCheck: a server's own file passes; truncated, altered, foreign and
// unknown-version files are refused as corrupt.
func TestCheck(t *testing.T) {
	src := redistest.Start(t)
	fill(t, src.Client(t))
	if err := src.Client(t).Save(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile(filepath.Join(src.Dir, fmt.Sprintf("dump-%d.rdb", src.Port)))
	if err != nil {
		t.Fatal(err)
	}
	info, err := Check(bytes.NewReader(file))
	if err != nil || info.Size != int64(len(file)) || info.Checksum == 0 {
		t.Fatalf("Check of redis-server's own file: %+v, %v", info, err)
	}
	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 0x20
	unsummed := bytes.Clone(file)
	copy(unsummed[len(unsummed)-8:], make([]byte, 8))
	if _, err := Check(bytes.NewReader(unsummed)); err != nil {
		t.Errorf("a file with the checksum disabled: %v", err)
	}
	for name, bad := range map[string][]byte{
		"empty":       nil,
		"header only": file[:9],
		"half":        file[:len(file)/2],
		"no checksum": file[:len(file)-8],
		"one short":   file[:len(file)-1],
		"flipped":     flipped,
		"not rdb":     []byte("*1\r\n$4\r\nPING\r\n and more bytes"),
		"version 99":  append([]byte("REDIS0099"), file[9:]...),
		"version x":   append([]byte("REDIS00x9"), file[9:]...),
	} {
		if _, err := Check(bytes.NewReader(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Check = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestSplitPayload refuses short and altered payloads.
func TestSplitPayload(t *testing.T) {
	c := redistest.Start(t).Client(t)
	c.Set(t.Context(), "k", "value", 0)
	dump := []byte(c.Dump(t.Context(), "k").Val())
	typ, value, version, err := SplitPayload(dump)
	if err != nil || typ != 0 || version < MinVersion || !bytes.Contains(value, []byte("value")) {
		t.Fatalf("SplitPayload = %d %q %d %v", typ, value, version, err)
	}
	bad := bytes.Clone(dump)
	bad[2] ^= 1
	for _, p := range [][]byte{nil, dump[:5], bad} {
		if _, _, _, err := SplitPayload(p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("SplitPayload(%q) = %v, want ErrCorrupt", p, err)
		}
	}
}

// FuzzCheck: no input panics, and an accepted input ends with the EOF
// opcode and a checksum.
func FuzzCheck(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("REDIS0011\xfe\x00\xff\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Add([]byte("REDIS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Check(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(b) < 18 || b[len(b)-9] != opEOF || info.Size != int64(len(b)) {
			t.Fatalf("accepted %q as %+v", b, info)
		}
	})
}

package keeper

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// fillTypes writes every data type Redis has, in small and large
// encodings (an intset among the sets, a stream with a consumer group),
// n plain keys and some TTLs.
func fillTypes(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	ctx := t.Context()
	_, err := c.Pipelined(ctx, func(pl redis.Pipeliner) error {
		redistest.QueueEveryType(ctx, pl, 300)
		for i := range n {
			if i%4 == 0 {
				pl.Set(ctx, "k"+strconv.Itoa(i), i, time.Duration(i+60)*time.Second)
			} else {
				pl.Set(ctx, "k"+strconv.Itoa(i), strings.Repeat("v", i%64), 0)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// savedRDB saves s's data set and returns the file.
func savedRDB(t *testing.T, s *redistest.Server) []byte {
	t.Helper()
	if err := s.Client(t).Save(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, fmt.Sprintf("dump-%d.rdb", s.Port)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// garbageRDB is a file whose checksum is right but whose one value is not
// a valid list: only a server that loads it (sanitize-dump-payload) sees.
func garbageRDB() []byte {
	b := []byte("REDIS0010\xfe\x00\x0e\x03bad\x01\x05zzzzz\xff")
	return binary.LittleEndian.AppendUint64(b, rdbfile.Checksum(b))
}

// restoreRig is a keeper (not running: its steps are called directly,
// with a lease) beside a pair, a store directory and a source server
// whose saved file the tests restore.
type restoreRig struct {
	*env
	k    *Keeper
	objs *objstore.Local
}

func newRestoreRig(t *testing.T) *restoreRig {
	t.Helper()
	e := newEnvWith(t, "databases", "4", "enable-debug-command", "yes")
	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	k, err := New(Config{ID: "k1", Store: objs}, e.store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	k.leaseUntil.Store(time.Now().Add(time.Hour).UnixNano())
	if _, err := e.store.UpdateJob(t.Context(), nil, "job1", func(j *metadb.Job) error { // the create, done
		j.State = metadb.JobDone
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return &restoreRig{env: e, k: k, objs: objs}
}

// start uploads file and records its restore job.
func (r *restoreRig) start(t *testing.T, id string, file []byte) *metadb.Job {
	t.Helper()
	name := "uploads/acme/" + id + ".rdb"
	if _, err := r.objs.Put(t.Context(), name, bytes.NewReader(file)); err != nil {
		t.Fatal(err)
	}
	j, err := r.store.StartRestore(t.Context(), "acme", r.db.Index, id,
		map[string]string{metadb.RestoreObject: name, metadb.RestoreFrom: metadb.RestoreFromUpload})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (r *restoreRig) job(t *testing.T, id string) *metadb.Job {
	t.Helper()
	j, err := r.store.Job(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (r *restoreRig) uploaded(t *testing.T, id string) bool {
	_, err := r.objs.Stat(t.Context(), "uploads/acme/"+id+".rdb")
	return err == nil
}

// TestRestoreCheckRefuses: a file with a flipped byte (checksum wrong), a
// truncated one (an export damaged at rest: the API checks uploads), one
// with a right checksum and a value Redis will not load, and one whose
// data takes more than the db's size are refused at check with Redis's own
// reason or the sizes: the job fails with its refusal code, the upload is
// deleted and the db's slot keeps its data.
func TestRestoreCheckRefuses(t *testing.T) {
	r := newRestoreRig(t)
	ctx := t.Context()
	src := redistest.Start(t)
	fillTypes(t, src.Client(t), 2000)
	good := savedRDB(t, src)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x20
	slot := r.master.ClientDB(t, r.db.SlotDB)
	slot.Set(ctx, "mine", "old", 0)

	for _, tc := range []struct {
		name, refusal, says string
		file                []byte
		quota               int64
	}{
		{"flipped byte", metadb.RestoreCorrupt, "corrupt RDB: checksum mismatch", flipped, 64 << 20},
		{"truncated", metadb.RestoreCorrupt, "corrupt RDB: truncated", good[:len(good)/2], 64 << 20},
		{"garbage value", metadb.RestoreCorrupt, "integrity check failed. (key 'bad')", garbageRDB(), 64 << 20},
		{"too big", metadb.RestoreTooBig, "the db's size is 64M: resize first", good, 100 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := r.store.UpdateDB(ctx, nil, "test", "acme", r.db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
				d.QuotaBytes = tc.quota
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
			id := "rst-" + strings.ReplaceAll(tc.name, " ", "-")
			j := r.start(t, id, tc.file)
			if _, err := r.k.restoreCheck(ctx, j); !errors.Is(err, errJobEnded) {
				t.Fatalf("check: %v, want the job ended", err)
			}
			j = r.job(t, id)
			if j.State != metadb.JobFailed || j.Data[metadb.RestoreRefusal] != tc.refusal || !strings.Contains(j.Error, tc.says) {
				t.Fatalf("job %s %s, refusal %q, error %q; want failed, %s, saying %q", j.State, j.Step,
					j.Data[metadb.RestoreRefusal], j.Error, tc.refusal, tc.says)
			}
			t.Logf("%s: %s", tc.name, j.Error)
			if r.uploaded(t, id) {
				t.Fatal("the refused upload is still in the store")
			}
			if v := slot.Get(ctx, "mine").Val(); v != "old" || slot.DBSize(ctx).Val() != 1 {
				t.Fatalf("the db changed: mine=%q, %d keys", v, slot.DBSize(ctx).Val())
			}
		})
	}
}

// TestRestoreCheckAndLoad: a redis-server's own file of every type passes
// check (its size measured, the keys of its db 1 counted and left out);
// load replaces the slot's old data with exactly db 0 of the file (every
// key's digest, TTLs within a second), on the replica too, records its
// progress and deletes the upload.
func TestRestoreCheckAndLoad(t *testing.T) {
	r := newRestoreRig(t)
	ctx := t.Context()
	src := redistest.Start(t, "enable-debug-command", "yes")
	fillTypes(t, src.Client(t), 5000)
	src.ClientDB(t, 1).Set(ctx, "elsewhere", "1", 0)
	src.ClientDB(t, 1).Set(ctx, "elsewhere2", "1", 0)
	file := savedRDB(t, src)
	want := keyState(t, src.Client(t))
	slot := r.master.ClientDB(t, r.db.SlotDB)
	slot.Set(ctx, "mine", "old", 0)
	slot.Set(ctx, "str:int", "overwritten", 0)

	j := r.start(t, "rst-1", file)
	next, err := r.k.restoreCheck(ctx, j)
	if err != nil || next != metadb.StepReadOnly {
		t.Fatalf("check: %s, %v", next, err)
	}
	j = r.job(t, "rst-1")
	used, _ := strconv.ParseInt(j.Data[metadb.RestoreUsedBytes], 10, 64)
	if j.Step != metadb.StepReadOnly || used <= 0 || j.Data[metadb.RestoreIgnoredKeys] != "2" ||
		j.Data[metadb.ResizeKeysTotal] != strconv.Itoa(len(want)) {
		t.Fatalf("checked job: %+v", j)
	}
	if slot.Get(ctx, "mine").Val() != "old" {
		t.Fatal("check wrote to the db")
	}
	// The master's readonly step, emulated.
	if _, err := r.store.UpdateJob(ctx, nil, "rst-1", func(cur *metadb.Job) error {
		cur.Advance(metadb.StepReadOnly, metadb.StepLoad, "test", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	j = r.job(t, "rst-1")
	start := time.Now()
	next, err = r.k.restoreLoad(ctx, j)
	if err != nil || next != metadb.StepRelease {
		t.Fatalf("load: %s, %v", next, err)
	}
	t.Logf("loaded %d keys (%d bytes) in %v", len(want), used, time.Since(start))
	sameKeys(t, want, keyState(t, slot))
	if n := r.replica.ClientDB(t, r.db.SlotDB).DBSize(ctx).Val(); n != int64(len(want)) {
		t.Fatalf("replica holds %d keys, want %d", n, len(want))
	}
	j = r.job(t, "rst-1")
	if j.Step != metadb.StepRelease || j.Data[metadb.ResizeKeysCopied] != strconv.Itoa(len(want)) ||
		j.Data[metadb.ResizeBytesCopied] == "" || j.Data[metadb.ResizeBytesCopied] == "0" {
		t.Fatalf("loaded job: %+v", j)
	}
	if r.uploaded(t, "rst-1") {
		t.Fatal("the upload is still in the store after the load")
	}
	// A second load (a keeper that died before recording) gives the same.
	if _, err := r.store.EndRelease(ctx, nil, "rst-1", ""); err != nil {
		t.Fatal(err)
	}
	r.start(t, "rst-2", file)
	if _, err := r.store.UpdateJob(ctx, nil, "rst-2", func(cur *metadb.Job) error {
		cur.Step = metadb.StepLoad
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slot.Set(ctx, "between", "x", 0)
	if _, err := r.k.restoreLoad(context.WithoutCancel(ctx), r.job(t, "rst-2")); err != nil {
		t.Fatal(err)
	}
	sameKeys(t, want, keyState(t, slot))

	// A file gone at load: an upload was deleted by a load that finished,
	// whose work stands; an export the tenant deleted ends the restore
	// failed, saying so. Either way release follows.
	for i, from := range []string{metadb.RestoreFromUpload, metadb.RestoreFromExport} {
		prev, id := "rst-"+strconv.Itoa(i+2), "rst-"+strconv.Itoa(i+3)
		if _, err := r.store.EndRelease(ctx, nil, prev, ""); err != nil {
			t.Fatal(err)
		}
		r.start(t, id, file)
		if _, err := r.store.UpdateJob(ctx, nil, id, func(cur *metadb.Job) error {
			cur.Step, cur.Data[metadb.RestoreFrom] = metadb.StepLoad, from
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := r.objs.Delete(ctx, "uploads/acme/"+id+".rdb"); err != nil {
			t.Fatal(err)
		}
		next, err = r.k.restoreLoad(ctx, r.job(t, id))
		j := r.job(t, id)
		failed := strings.Contains(j.Data[metadb.RestoreFailure], "export was deleted before the load finished")
		if err != nil || next != metadb.StepRelease || j.Step != metadb.StepRelease || failed != (from == metadb.RestoreFromExport) {
			t.Fatalf("load of a deleted %s: %s, %v; job %+v", from, next, err, j)
		}
	}
	sameKeys(t, want, keyState(t, slot))
}

// TestRestoreCheckMemoryCap: a small file of highly compressed values
// whose data would take far more memory than the db may (a compression
// bomb) is refused as too big: the scratch server dies at its address
// space cap instead of taking the host's memory.
func TestRestoreCheckMemoryCap(t *testing.T) {
	r := newRestoreRig(t)
	ctx := t.Context()
	defer func(b int64) { scratchBase = b }(scratchBase)
	scratchBase = 160 << 20
	src := redistest.Start(t).Client(t)
	if err := src.Set(ctx, "big", strings.Repeat("a", 64<<20), 0).Err(); err != nil {
		t.Fatal(err)
	}
	dump := []byte(src.Dump(ctx, "big").Val())
	src.Del(ctx, "big")
	var buf bytes.Buffer
	w := rdbfile.NewWriter(&buf)
	for i := range 8 { // 512 MiB of data
		if err := w.Add("big"+strconv.Itoa(i), dump, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("file of %d bytes for 512 MiB of data", buf.Len())
	j := r.start(t, "rst-bomb", buf.Bytes())
	if _, err := r.k.restoreCheck(ctx, j); !errors.Is(err, errJobEnded) {
		t.Fatalf("check: %v, want the job ended", err)
	}
	j = r.job(t, "rst-bomb")
	if j.State != metadb.JobFailed || j.Data[metadb.RestoreRefusal] != metadb.RestoreTooBig {
		t.Fatalf("job %s, refusal %q, error %q; want failed as too big", j.State, j.Data[metadb.RestoreRefusal], j.Error)
	}
	t.Logf("refused: %s", j.Error)
}

// TestScratchNoVerdict: a scratch server that cannot start (no such
// binary, or an address space too small to start in) is an error the step
// retries, never a verdict on the file.
func TestScratchNoVerdict(t *testing.T) {
	objs, err := objstore.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := objs.Put(t.Context(), "f.rdb", bytes.NewReader(garbageRDB())); err != nil {
		t.Fatal(err)
	}
	for name, start := range map[string]func() error{
		"no binary": func() error {
			_, err := startScratch(t.Context(), "/nonexistent/redis-server", objs, "f.rdb", 1<<30)
			return err
		},
		"cap too small": func() error {
			_, err := startScratch(t.Context(), "redis-server", objs, "f.rdb", 1<<20)
			return err
		},
	} {
		err := start()
		if err == nil || errors.Is(err, errFileRefused) || errors.Is(err, errFileTooBig) || errors.Is(err, rdbfile.ErrCorrupt) {
			t.Fatalf("%s: %v, want an error that is no verdict on the file", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

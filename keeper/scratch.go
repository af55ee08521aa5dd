package keeper

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/granary-db/granary/internal/objstore"
	"github.com/granary-db/granary/internal/procgroup"
	"github.com/granary-db/granary/internal/rdbfile"
	"github.com/redis/go-redis/v9"
)

// A scratch server is a private redis-server that loads an RDB file so a
// restore can judge it (check) and read it (load) with the commands it
// already uses on live dbs. It listens on a unix socket in its own temp
// directory (no TCP port, so nothing else can reach or collide with it),
// wants a random password, saves nothing, checks every value as it loads
// (sanitize-dump-payload yes) and runs in a process group of its own,
// killed when the step ends. Its address space is capped (ulimit -v), so
// a small file of highly compressed values cannot take the host's memory:
// the server dies instead, and the restore is refused as too big.

// errFileRefused wraps what the scratch server said when it would not
// load a file; errFileTooBig a file whose values did not fit its memory.
var (
	errFileRefused = errors.New("the RDB does not load")
	errFileTooBig  = errors.New("the RDB's data does not fit in memory while loading")
)

// scratch is a running scratch server.
type scratch struct {
	proc   *procgroup.Proc
	dir    string
	sock   string
	client *redis.Client // db 0
}

// scratchFile is the file name the scratch server loads.
const scratchFile = "restore.rdb"

// scratchPrefix begins the name of a scratch server's temp directory,
// followed by the keeper's pid.
const scratchPrefix = "granary-restore-"

// sweepScratch removes the scratch directories of keepers that died
// without removing theirs (a SIGKILL): their files can be big. A keeper's
// own scratch server dies with it (procgroup's Pdeathsig).
func sweepScratch() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), scratchPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(d), scratchPrefix), "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}

// startScratch copies the object name of store into a new temp directory
// and starts bin (redis-server) on it, with its address space capped at
// memLimit bytes. It returns once the file is loaded and the server
// answers. A malformed file gives an error wrapping rdbfile.ErrCorrupt, a
// file the server refuses one wrapping errFileRefused (with Redis's own
// reason) or errFileTooBig; the caller
// closes the scratch server in every other case.
func startScratch(ctx context.Context, bin string, store objstore.Store, name string, memLimit int64) (*scratch, error) {
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("scratch redis-server: %w", err)
	}
	sweepScratch()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", scratchPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	if err := fetch(ctx, store, name, filepath.Join(dir, scratchFile)); err != nil {
		return nil, err
	}
	// A whole, unaltered file first (the API checked an upload already;
	// this also covers an export damaged at rest): then a short read
	// while loading can only be the memory cap.
	if err := checkFile(filepath.Join(dir, scratchFile)); err != nil {
		return nil, err
	}
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	pass := hex.EncodeToString(pw[:])
	sock := filepath.Join(dir, "redis.sock")
	args := []string{"-c", `ulimit -v "$0" && exec "$@"`, strconv.FormatInt(memLimit>>10, 10), bin,
		"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--dir", dir, "--dbfilename", scratchFile, "--logfile", filepath.Join(dir, "redis.log"),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--databases", "256",
		"--sanitize-dump-payload", "yes", "--requirepass", pass}
	cmd := exec.Command("sh", args...)
	p, err := procgroup.StartLogged(cmd, "scratch redis-server", filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	s := &scratch{proc: p, dir: dir, sock: sock, client: redis.NewClient(&redis.Options{Network: "unix", Addr: sock,
		Password: pass, PoolSize: 4, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Minute,
		WriteTimeout: time.Minute, DisableIdentity: true})}
	if err := s.waitLoaded(ctx); err != nil {
		s.close()
		return nil, err
	}
	ok = true
	return s, nil
}

// fetch copies the object name to the file path.
func fetch(ctx context.Context, store objstore.Store, name, path string) error {
	r, _, err := store.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	return nil
}

// checkFile runs rdbfile.Check on the file at path; a malformed file's
// error wraps rdbfile.ErrCorrupt.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = rdbfile.Check(f)
	return err
}

// waitLoaded waits until the server answers PING (it answers -LOADING
// while it loads), or has exited, which it does when it refuses the file.
func (s *scratch) waitLoaded(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Dial only once the socket exists: failed dials make the pool
		// back off (and log).
		if _, err := os.Stat(s.sock); err == nil {
			if err := s.client.Ping(ctx).Err(); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.proc.Done():
			return s.refusal()
		case <-tick.C:
		}
	}
}

// refusal reads why the server exited from its log: the warnings it
// wrote after "Server initialized", and the key redis-check-rdb names.
func (s *scratch) refusal() error {
	log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	out, _ := os.ReadFile(filepath.Join(s.dir, "stdout.log"))
	// Redis allocates a big value with a malloc that may fail, and then
	// says "Short read or OOM": the file was checked whole, so it is OOM.
	if strings.Contains(string(log), "Out Of Memory") || strings.Contains(string(log), "OOM loading DB") {
		return errFileTooBig
	}
	var reasons []string
	started := false
	for _, line := range strings.Split(string(log), "\n") {
		_, msg, ok := strings.Cut(line, " # ")
		switch {
		case !ok:
		case strings.HasPrefix(msg, "Server initialized"):
			started = true
		case started && !strings.HasPrefix(msg, "WARNING") && !strings.HasPrefix(msg, "Terminating server"):
			reasons = append(reasons, strings.TrimSpace(msg))
		}
	}
	if !started {
		// It died before it began to load: no verdict on the file (a
		// missing binary, a cap too small to start); the step retries.
		return fmt.Errorf("scratch redis-server did not start: %v", s.proc.Exited())
	}
	if len(reasons) == 0 {
		return fmt.Errorf("%w: redis-server exited (%v) while loading it", errFileRefused, s.proc.Exited())
	}
	reason := strings.Join(reasons, "; ")
	for _, line := range strings.Split(string(out), "\n") {
		if k, ok := strings.CutPrefix(line, "[additional info] Reading key "); ok {
			reason += " (key " + clipKey(k) + ")"
			break
		}
	}
	return fmt.Errorf("%w: %s", errFileRefused, reason)
}

// clipKey shortens a key name quoted in a reason.
func clipKey(k string) string {
	if len(k) > 80 {
		return k[:80] + "…"
	}
	return k
}

// otherDBKeys counts the keys of the file's dbs other than 0 (INFO
// keyspace), which a restore leaves out.
func (s *scratch) otherDBKeys(ctx context.Context) (int64, error) {
	info, err := s.client.Info(ctx, "keyspace").Result()
	if err != nil {
		return 0, err
	}
	var n int64
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "db") || name == "db0" {
			continue
		}
		keys, _, _ := strings.Cut(strings.TrimPrefix(rest, "keys="), ",")
		v, _ := strconv.ParseInt(keys, 10, 64)
		n += v
	}
	return n, nil
}

// close kills the server's process group and removes its directory.
func (s *scratch) close() {
	_ = s.client.Close()
	s.proc.Kill()
	_ = os.RemoveAll(s.dir)
}

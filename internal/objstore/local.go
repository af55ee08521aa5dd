package objstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Local is a Store in a directory. An object is the file at its name; its
// SHA-256 is kept beside it in "<name>.sha256", written before the object
// is renamed into place.
type Local struct{ dir string }

// NewLocal opens (and makes, mode 0700) the directory dir.
func NewLocal(dir string) (*Local, error) {
	if dir == "" {
		return nil, errors.New("objstore: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	sweepStale(abs, time.Now().Add(-staleTemp))
	return &Local{dir: abs}, nil
}

// staleTemp is the age past which a Put's temporary file is left over
// from a process killed in the middle of it: a Put in flight writes to its
// file all along.
const staleTemp = time.Hour

// sweepStale removes, best effort, the temporary files of Puts under dir
// last written before cutoff, so that processes killed while storing (a
// keeper SIGKILLed during an export) do not fill the directory over time.
func sweepStale(dir string, cutoff time.Time) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(cutoff) {
			_ = os.Remove(path)
		}
		return nil
	})
}

// tempPrefix begins the names of the files Puts write before renaming
// them into place; no object name begins with a dot.
const tempPrefix = ".put-"

// Dir is the store's directory.
func (l *Local) Dir() string { return l.dir }

const sumSuffix = ".sha256"

func (l *Local) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	if strings.HasSuffix(name, sumSuffix) {
		return "", fmt.Errorf("objstore: bad object name %q", name)
	}
	return filepath.Join(l.dir, filepath.FromSlash(name)), nil
}

// Put implements Store.
func (l *Local) Put(ctx context.Context, name string, r io.Reader) (Info, error) {
	p, err := l.path(name)
	if err != nil {
		return Info{}, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), tempPrefix+"*")
	if err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), ctxReader{ctx, r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.WriteFile(p+sumSuffix, []byte(sum+"\n"), 0o600); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, fmt.Errorf("objstore: %w", err)
	}
	return Info{Name: name, Size: n, SHA256: sum, Modified: st.ModTime()}, nil
}

// Open implements Store.
func (l *Local) Open(ctx context.Context, name string) (io.ReadCloser, Info, error) {
	info, err := l.Stat(ctx, name)
	if err != nil {
		return nil, Info{}, err
	}
	p, _ := l.path(name)
	f, err := os.Open(p)
	if err != nil {
		return nil, Info{}, notFound(err)
	}
	return f, info, nil
}

// Stat implements Store.
func (l *Local) Stat(_ context.Context, name string) (Info, error) {
	p, err := l.path(name)
	if err != nil {
		return Info{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		return Info{}, notFound(err)
	}
	if !st.Mode().IsRegular() {
		return Info{}, ErrNotFound
	}
	sum, err := os.ReadFile(p + sumSuffix)
	if err != nil {
		return Info{}, notFound(err)
	}
	return Info{Name: name, Size: st.Size(), SHA256: strings.TrimSpace(string(sum)), Modified: st.ModTime()}, nil
}

// Delete implements Store.
func (l *Local) Delete(_ context.Context, name string) error {
	p, err := l.path(name)
	if err != nil {
		return err
	}
	for _, f := range []string{p, p + sumSuffix} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("objstore: %w", err)
		}
	}
	return nil
}

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	return fmt.Errorf("objstore: %w", err)
}

// ctxReader stops a copy once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

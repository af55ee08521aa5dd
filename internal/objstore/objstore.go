// Package objstore keeps the files Granary's data jobs produce and read:
// db exports and uploaded RDB files for restore. A Store holds named,
// immutable objects; an object becomes visible only once it is whole, so a
// crash in the middle of a Put leaves no half file behind a name.
//
// Two implementations: Local (a directory, the default; every component
// that reads or writes exports must see the same directory, so it suits one
// host or a shared filesystem) and S3 (an S3-compatible bucket) for
// multi-host deployments. Open builds either from a spec string, the --store flag of
// the keeper and the API.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"
)

// ErrNotFound is returned for a name the store does not hold.
var ErrNotFound = errors.New("objstore: no such object")

// Info describes a stored object.
type Info struct {
	Name     string
	Size     int64
	SHA256   string // hex SHA-256 of the content
	Modified time.Time
}

// Store holds named immutable objects.
type Store interface {
	// Put stores r's content under name, replacing any object of that
	// name; the object is visible only once the whole content is stored.
	Put(ctx context.Context, name string, r io.Reader) (Info, error)
	// Open reads the object name; the caller closes the reader.
	Open(ctx context.Context, name string) (io.ReadCloser, Info, error)
	// Stat describes the object name.
	Stat(ctx context.Context, name string) (Info, error)
	// Delete removes name; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
}

// validName matches the names Store accepts: path segments of letters,
// digits, '.', '_' and '-', separated by '/', none of them "." or "..".
var validName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)

// CheckName reports whether name can name an object: at most 512 bytes of
// path segments (letters, digits, '.', '_', '-'; none starting with '.'),
// not ending in ".sha256" (Local keeps checksums under such names). Every
// Store accepts exactly these names, so objects move between stores.
func CheckName(name string) error {
	if len(name) > 512 || !validName.MatchString(name) || strings.Contains(name, "..") || strings.HasSuffix(name, sumSuffix) {
		return fmt.Errorf("objstore: bad object name %q", name)
	}
	return nil
}

// Open builds a store from spec:
//
//	dir:/path/to/dir     a Local store in that directory (made if missing)
//	/path/to/dir         the same
//	s3://bucket/prefix?endpoint=host:port&region=r&insecure=1
//	                     an S3 store (ParseS3Spec), credentials from the
//	                     environment
//
// An empty spec is an error. Open does no network I/O. Its errors never
// show credentials or the spec's query.
func Open(spec string) (Store, error) {
	switch {
	case spec == "":
		return nil, errors.New("objstore: empty store spec")
	case strings.HasPrefix(spec, "dir:"):
		return NewLocal(strings.TrimPrefix(spec, "dir:"))
	case strings.HasPrefix(spec, "/"):
		return NewLocal(spec)
	case strings.HasPrefix(spec, "s3://"):
		cfg, err := ParseS3Spec(spec, os.Getenv)
		if err != nil {
			return nil, err
		}
		return NewS3(cfg)
	}
	return nil, fmt.Errorf("objstore: unknown store spec %q (want dir:/path or s3://bucket/prefix?endpoint=host:port)", redact(spec))
}

// redact drops anything that may be a credential from a spec before it
// is shown: the part after '?' and a user:password@ part.
func redact(spec string) string {
	if i := strings.IndexByte(spec, '?'); i >= 0 {
		spec = spec[:i] + "?…"
	}
	if i := strings.Index(spec, "://"); i >= 0 {
		if j := strings.IndexByte(spec[i+3:], '@'); j >= 0 {
			spec = spec[:i+3] + "…@" + spec[i+3+j+1:]
		}
	}
	return spec
}

package objstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says where an S3 store keeps its objects and how it signs in.
// ParseS3Spec fills it from a spec string and the environment.
type S3Config struct {
	// Endpoint is the server's host:port, e.g. "s3.amazonaws.com" or
	// "minio.internal:9000". Required.
	Endpoint string
	// Bucket holds the objects; it must exist. Required.
	Bucket string
	// Prefix is put before every object name ("" or ending in '/').
	Prefix string
	// Region is the bucket's region; "" lets the client ask the server.
	Region string
	// Insecure speaks plain HTTP instead of HTTPS.
	Insecure bool
	// Lookup addresses the bucket by path (host/bucket/key), by DNS
	// (bucket.host/key), or, when BucketLookupAuto (the default), as the
	// client guesses from the endpoint.
	Lookup minio.BucketLookupType
	// AccessKey, SecretKey and SessionToken sign the requests. They come
	// from the environment, never from a spec (specs end up in logs).
	AccessKey, SecretKey, SessionToken string
	// PartSize is the size of one part of an upload, and the memory one
	// Put holds at a time. Default 16 MiB.
	PartSize uint64
}

// DefaultPartSize is S3Config.PartSize's default: big enough that a 1G
// export takes 64 parts, small enough that a Put holds little memory.
const DefaultPartSize = 16 << 20

// String describes the config without its credentials.
func (c S3Config) String() string {
	scheme := "https"
	if c.Insecure {
		scheme = "http"
	}
	return fmt.Sprintf("s3 %s://%s/%s/%s", scheme, c.Endpoint, c.Bucket, c.Prefix)
}

// S3 is a Store in an S3-compatible bucket. An object is the key
// Prefix+name; its SHA-256 is the object's user metadata "sha256", so Stat
// and Open report it without reading the content.
//
// The checksum is known only once the whole content has streamed, and S3
// takes metadata with the first request of an upload, so Put uploads to a
// temporary key under Prefix+".incoming/" (a name no object can have: names
// never start with '.'), then copies it, server-side, to its name with the
// checksum as metadata, and removes the temporary key. The copy replaces
// the object atomically: readers see the old object or the new one. A
// process killed mid-Put can leave a temporary key behind; a lifecycle
// rule on the bucket that expires "<prefix>.incoming/" keys (and aborts
// incomplete multipart uploads) after a day clears them.
type S3 struct {
	cfg S3Config
	c   *minio.Client
}

// NewS3 builds an S3 store. It does no I/O: a missing bucket or wrong
// credentials show at the first call.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("objstore: s3 needs an endpoint and a bucket")
	}
	if cfg.Prefix != "" && !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:       !cfg.Insecure,
		Region:       cfg.Region,
		BucketLookup: cfg.Lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: %s: %w", cfg, err)
	}
	return &S3{cfg: cfg, c: c}, nil
}

// sumKey is the user metadata entry that holds an object's SHA-256;
// on the wire it is the header x-amz-meta-sha256.
const sumKey = "sha256"

// maxCopySize is the largest object one CopyObject request may copy.
const maxCopySize = 5 << 30

func (s *S3) key(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return s.cfg.Prefix + name, nil
}

// Put implements Store. It holds one part (PartSize) of the content in
// memory at a time, whatever the content's size.
func (s *S3) Put(ctx context.Context, name string, r io.Reader) (Info, error) {
	key, err := s.key(name)
	if err != nil {
		return Info{}, err
	}
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	tmp := s.cfg.Prefix + ".incoming/" + hex.EncodeToString(rnd[:])
	hr := &hashReader{r: ctxReader{ctx, r}, h: sha256.New()}
	up, err := s.c.PutObject(ctx, s.cfg.Bucket, tmp, hr, -1, minio.PutObjectOptions{
		PartSize:    s.cfg.PartSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		// minio-go has aborted the multipart upload; no key was made.
		return Info{}, fmt.Errorf("objstore: put %s: %w", name, err)
	}
	defer s.removeTemp(ctx, tmp)
	if up.Size != hr.n {
		return Info{}, fmt.Errorf("objstore: put %s: stored %d bytes of %d", name, up.Size, hr.n)
	}
	sum := hex.EncodeToString(hr.h.Sum(nil))
	dst := minio.CopyDestOptions{
		Bucket: s.cfg.Bucket, Object: key,
		UserMetadata: map[string]string{sumKey: sum}, ReplaceMetadata: true,
	}
	src := minio.CopySrcOptions{Bucket: s.cfg.Bucket, Object: tmp}
	var done minio.UploadInfo
	if hr.n <= maxCopySize {
		done, err = s.c.CopyObject(ctx, dst, src)
	} else {
		// A multipart copy; only objects above 5 GiB take this path.
		done, err = s.c.ComposeObject(ctx, dst, src)
	}
	if err != nil {
		return Info{}, fmt.Errorf("objstore: put %s: %w", name, err)
	}
	mod := done.LastModified
	if mod.IsZero() {
		mod = time.Now()
	}
	return Info{Name: name, Size: hr.n, SHA256: sum, Modified: mod}, nil
}

// removeTemp deletes a temporary key, even when ctx has ended: a Put
// cancelled after its upload must not leave the key behind.
func (s *S3) removeTemp(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	// On failure the key stays until the bucket's lifecycle rule expires
	// it; the Put itself has succeeded or failed already.
	_ = s.c.RemoveObject(ctx, s.cfg.Bucket, tmp, minio.RemoveObjectOptions{})
}

// Open implements Store. The reader reads from the server as it goes and
// fails once ctx ends.
func (s *S3) Open(ctx context.Context, name string) (io.ReadCloser, Info, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, Info{}, err
	}
	obj, err := s.c.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, s3Error("open", name, err)
	}
	// Stat sends the GET; the info is that of the content being read.
	oi, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, Info{}, s3Error("open", name, err)
	}
	info, err := s3Info(name, oi)
	if err != nil {
		obj.Close()
		return nil, Info{}, err
	}
	return obj, info, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, name string) (Info, error) {
	key, err := s.key(name)
	if err != nil {
		return Info{}, err
	}
	oi, err := s.c.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s3Error("stat", name, err)
	}
	return s3Info(name, oi)
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if err := s.c.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if err := s3Error("delete", name, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// s3Info is the Info of an object, or ErrNotFound for a key that Put did
// not write (it has no checksum), as Local treats a file without its
// checksum file.
func s3Info(name string, oi minio.ObjectInfo) (Info, error) {
	var sum string
	for k, v := range oi.UserMetadata {
		if strings.EqualFold(k, sumKey) {
			sum = v
		}
	}
	if len(sum) != 2*sha256.Size {
		return Info{}, fmt.Errorf("%w: %s has no sha256 metadata (not written by granary)", ErrNotFound, name)
	}
	return Info{Name: name, Size: oi.Size, SHA256: sum, Modified: oi.LastModified}, nil
}

// s3Error wraps ErrNotFound for a missing key (not for a missing bucket),
// and the error otherwise.
func s3Error(op, name string, err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code == minio.NoSuchKey || (resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket) {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return fmt.Errorf("objstore: %s %s: %w", op, name, err)
}

// hashReader hashes and counts what is read through it.
type hashReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

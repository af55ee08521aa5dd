package objstore

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// TestS3 runs the Store behaviour against a real S3 server (versitygw),
// with objects at the bucket's top and under a prefix.
func TestS3(t *testing.T) {
	srv := startS3Server(t)
	for _, tc := range []struct{ name, prefix string }{{"NoPrefix", ""}, {"Prefix", "granary/exports"}} {
		t.Run(tc.name, func(t *testing.T) {
			testStore(t, func(t *testing.T) storeCase {
				bucket := srv.bucket(t)
				return storeCase{
					store:     srv.open(t, bucket, tc.prefix),
					leftovers: func(t *testing.T) []string { return srv.everything(t, bucket) },
				}
			})
		})
	}
}

// open builds the store through Open, from a spec and the environment, as
// the keeper and the API do.
func (s *s3Server) open(t *testing.T, bucket, prefix string) *S3 {
	t.Helper()
	t.Setenv(EnvS3AccessKey, s.access)
	t.Setenv(EnvS3SecretKey, s.secret)
	st, err := Open(fmt.Sprintf("s3://%s/%s?endpoint=%s&insecure=1", bucket, prefix, s.endpoint))
	if err != nil {
		t.Fatal(err)
	}
	return st.(*S3)
}

// An object is the key prefix+name with its SHA-256 in its metadata, and
// a Put leaves no other key; a key Put did not write (no checksum) is not
// an object.
func TestS3Layout(t *testing.T) {
	ctx := t.Context()
	srv := startS3Server(t)
	bucket := srv.bucket(t)
	s := srv.open(t, bucket, "p/q")
	info, err := s.Put(ctx, "t1/e.rdb", strings.NewReader("content"))
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.everything(t, bucket); len(got) != 1 || got[0] != "p/q/t1/e.rdb" {
		t.Fatalf("bucket holds %v, want [p/q/t1/e.rdb]", got)
	}
	oi, err := srv.client.StatObject(ctx, bucket, "p/q/t1/e.rdb", minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := oi.Metadata.Get("X-Amz-Meta-Sha256"); got != info.SHA256 || got != sum([]byte("content")) {
		t.Fatalf("x-amz-meta-sha256 %q, want %q", got, info.SHA256)
	}

	if _, err := srv.client.PutObject(ctx, bucket, "p/q/foreign", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "foreign"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat of a key without a checksum: %v, want ErrNotFound", err)
	}
	if _, _, err := s.Open(ctx, "foreign"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open of a key without a checksum: %v, want ErrNotFound", err)
	}
}

// Wrong credentials and a missing bucket are errors that say so (not "no
// such object") and never show the secret.
func TestS3Errors(t *testing.T) {
	ctx := t.Context()
	srv := startS3Server(t)
	bucket := srv.bucket(t)
	t.Setenv(EnvS3AccessKey, srv.access)
	t.Setenv(EnvS3SecretKey, "wrong-"+srv.secret)
	s, err := Open(fmt.Sprintf("s3://%s?endpoint=%s&insecure=1", bucket, srv.endpoint))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		func() error { _, err := s.Put(ctx, "e", strings.NewReader("x")); return err }(),
		func() error { _, _, err := s.Open(ctx, "e"); return err }(),
	} {
		if err == nil || errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), srv.secret) {
			t.Errorf("with a wrong secret: %v", err)
		}
	}

	t.Setenv(EnvS3SecretKey, srv.secret)
	s, err = Open(fmt.Sprintf("s3://no-such-bucket?endpoint=%s&insecure=1", srv.endpoint))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "e", strings.NewReader("x")); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Errorf("put into a missing bucket: %v", err)
	}
	if _, _, err := s.Open(ctx, "e"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "bucket") {
		t.Errorf("open in a missing bucket: %v, want an error about the bucket", err)
	}
	if _, err := s.Stat(ctx, "e"); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "bucket") {
		t.Errorf("stat in a missing bucket: %v, want an error about the bucket", err)
	}
	if err := s.Delete(ctx, "e"); err == nil || !strings.Contains(err.Error(), "bucket") {
		t.Errorf("delete in a missing bucket: %v, want an error about the bucket", err)
	}
}

func TestParseS3Spec(t *testing.T) {
	ours := map[string]string{EnvS3AccessKey: "AKOURS", EnvS3SecretKey: "envsecret1"}
	aws := map[string]string{"AWS_ACCESS_KEY_ID": "AKAWS", "AWS_SECRET_ACCESS_KEY": "envsecret2", "AWS_SESSION_TOKEN": "envsecret3"}
	both := map[string]string{EnvS3AccessKey: "AKOURS", EnvS3SecretKey: "envsecret1", "AWS_ACCESS_KEY_ID": "AKAWS", "AWS_SECRET_ACCESS_KEY": "envsecret2"}
	for _, tc := range []struct {
		name, spec string
		env        map[string]string
		want       S3Config // compared when err is ""
		err        string   // a part of the error
	}{
		{name: "bucket only", spec: "s3://granary-exports", env: ours,
			want: S3Config{Endpoint: "s3.amazonaws.com", Bucket: "granary-exports", AccessKey: "AKOURS", SecretKey: "envsecret1"}},
		{name: "everything", spec: "s3://b.1/a/b/?endpoint=127.0.0.1:9000&region=eu-west-3&insecure=1&lookup=path", env: ours,
			want: S3Config{Endpoint: "127.0.0.1:9000", Bucket: "b.1", Prefix: "a/b/", Region: "eu-west-3", Insecure: true,
				Lookup: minio.BucketLookupPath, AccessKey: "AKOURS", SecretKey: "envsecret1"}},
		{name: "dns lookup, host without port", spec: "s3://bkt/p?endpoint=minio.internal&lookup=dns&insecure=false", env: ours,
			want: S3Config{Endpoint: "minio.internal", Bucket: "bkt", Prefix: "p/", Lookup: minio.BucketLookupDNS, AccessKey: "AKOURS", SecretKey: "envsecret1"}},
		{name: "aws environment", spec: "s3://bkt", env: aws,
			want: S3Config{Endpoint: "s3.amazonaws.com", Bucket: "bkt", AccessKey: "AKAWS", SecretKey: "envsecret2", SessionToken: "envsecret3"}},
		{name: "ours before aws", spec: "s3://bkt", env: both,
			want: S3Config{Endpoint: "s3.amazonaws.com", Bucket: "bkt", AccessKey: "AKOURS", SecretKey: "envsecret1"}},

		{name: "no bucket", spec: "s3://", env: ours, err: "not a bucket name"},
		{name: "no bucket, a path", spec: "s3:///p", env: ours, err: "not a bucket name"},
		{name: "bucket with capitals", spec: "s3://Exports", env: ours, err: `bucket "Exports"`},
		{name: "bucket too short", spec: "s3://ab", env: ours, err: "not a bucket name"},
		{name: "bucket with a port", spec: "s3://bkt:9000/p", env: ours, err: "not a bucket name"},
		{name: "opaque", spec: "s3:bkt", env: ours, err: "not of the form s3://bucket"},
		{name: "user and password", spec: "s3://AKIA:pwsecret@bkt/p", env: ours, err: "credentials do not go in the spec"},
		{name: "secret in the query", spec: "s3://bkt?secret_key=qsecret", env: ours, err: "credentials do not go in the spec"},
		{name: "access key in the query", spec: "s3://bkt?accessKey=qsecret", env: ours, err: "credentials do not go in the spec"},
		{name: "odd parameter", spec: "s3://bkt?AbC123xYz=1", env: ours, err: "unknown parameter (a parameter)"},
		{name: "unknown parameter", spec: "s3://bkt?endpont=h:1", env: ours, err: "unknown parameter endpont"},
		{name: "parameter twice", spec: "s3://bkt?endpoint=a:1&endpoint=b:2", env: ours, err: "endpoint is given 2 times"},
		{name: "bad query", spec: "s3://bkt?endpoint=%zz", env: ours, err: "not name=value pairs"},
		{name: "endpoint with a scheme", spec: "s3://bkt?endpoint=http://h:9000", env: ours, err: "no scheme; insecure=1 for http"},
		{name: "endpoint with a path", spec: "s3://bkt?endpoint=h:9000/x", env: ours, err: "not host[:port]"},
		{name: "endpoint port not a number", spec: "s3://bkt?endpoint=h:port", env: ours, err: "not host[:port]"},
		{name: "endpoint port 0", spec: "s3://bkt?endpoint=h:0", env: ours, err: "not host[:port]"},
		{name: "empty endpoint", spec: "s3://bkt?endpoint=", env: ours, err: "not host[:port]"},
		{name: "bad insecure", spec: "s3://bkt?insecure=maybe", env: ours, err: "want 1 or 0"},
		{name: "bad lookup", spec: "s3://bkt?lookup=vhost", env: ours, err: "want path, dns or auto"},
		{name: "bad region", spec: "s3://bkt?region=EU%20West", env: ours, err: "not a region name"},
		{name: "prefix going up", spec: "s3://bkt/a/../b", env: ours, err: "prefix"},
		{name: "hidden prefix", spec: "s3://bkt/.incoming", env: ours, err: "prefix"},
		{name: "fragment", spec: "s3://bkt/p#x", env: ours, err: "'#'"},
		{name: "no credentials", spec: "s3://bkt", env: nil, err: "no credentials: set GRANARY_S3_ACCESS_KEY and GRANARY_S3_SECRET_KEY"},
		{name: "only our access key", spec: "s3://bkt", env: map[string]string{EnvS3AccessKey: "AK"}, err: "set both GRANARY_S3_ACCESS_KEY"},
		{name: "only the aws secret", spec: "s3://bkt", env: map[string]string{"AWS_SECRET_ACCESS_KEY": "envsecret2"}, err: "set both AWS_ACCESS_KEY_ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseS3Spec(tc.spec, func(k string) string { return tc.env[k] })
			if tc.err == "" {
				tc.want.PartSize = DefaultPartSize
				if err != nil || got != tc.want {
					t.Fatalf("got %#v, %v; want %#v", got, err, tc.want)
				}
				if s := got.String(); strings.Contains(s, "secret") {
					t.Fatalf("String shows a secret: %s", s)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("got %#v, %v; want an error with %q", got, err, tc.err)
			}
			for _, secret := range []string{"AKIA", "pwsecret", "qsecret", "envsecret"} {
				if strings.Contains(strings.ToLower(err.Error()), strings.ToLower(secret)) {
					t.Fatalf("error shows %s: %v", secret, err)
				}
			}
		})
	}
}

// Put streams: a 128 MiB object goes up with far less than 128 MiB
// allocated (one part buffer, 16 MiB, and the client's small change).
func TestS3PutMemory(t *testing.T) {
	srv := startS3Server(t)
	s := srv.open(t, srv.bucket(t), "")
	const size = 128 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := s.Put(t.Context(), "big", randReader(size)); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > size/2 {
		t.Fatalf("a %d MiB put allocated %d MiB", size>>20, got>>20)
	}
}

package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/procgroup"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3ServerBin is the S3 server the tests run against: versitygw (Apache
// 2.0), an S3 gateway over a directory, which scripts/s3server.sh builds
// at a pinned version into $(go env GOBIN) or $(go env GOPATH)/bin.
const s3ServerBin = "versitygw"

// s3Server is a running versitygw serving a t.TempDir() on a loopback
// port, with credentials of its own.
type s3Server struct {
	endpoint       string // 127.0.0.1:port
	access, secret string
	client         *minio.Client
}

// startS3Server starts versitygw in a process group of its own, waits
// until it answers and kills the group at the test's end. It fails the
// test, with how to install it, when versitygw is missing.
func startS3Server(t *testing.T) *s3Server {
	t.Helper()
	bin, err := findS3Server()
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	// The free port may be taken between our probe and the server's bind:
	// then the server exits and another port is tried.
	for range 5 {
		s, p, err := startS3ServerOnce(t, bin)
		if err == nil {
			t.Cleanup(p.Kill)
			return s
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

func startS3ServerOnce(t *testing.T, bin string) (*s3Server, *procgroup.Proc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &s3Server{endpoint: addr, access: "k" + randHex(8), secret: randHex(20)}
	cmd := exec.Command(bin, "--port", addr, "--quiet", "posix", t.TempDir())
	// Credentials through the environment, so they stay out of ps.
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.access, "ROOT_SECRET_KEY="+s.secret)
	p, err := procgroup.StartLogged(cmd, s3ServerBin, filepath.Join(t.TempDir(), "versitygw.log"))
	if err != nil {
		return nil, nil, err
	}
	s.client, err = minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(s.access, s.secret, "")})
	if err != nil {
		p.Kill()
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		// Only our server knows these credentials: an answer from another
		// process that took the port would be an error.
		if _, err := s.client.ListBuckets(ctx); err == nil {
			return s, p, nil
		}
		select {
		case <-p.Done():
			return nil, nil, p.Exited()
		case <-ctx.Done():
			p.Kill()
			return nil, nil, fmt.Errorf("versitygw on %s did not answer within 30s", addr)
		case <-tick.C:
		}
	}
}

// findS3Server looks for versitygw in PATH, then where `go install` puts
// it.
func findS3Server() (string, error) {
	if p, err := exec.LookPath(s3ServerBin); err == nil {
		return p, nil
	}
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output()
	if err == nil {
		lines := strings.Split(string(out), "\n") // GOBIN's line may be empty
		var dirs []string
		if lines[0] != "" {
			dirs = append(dirs, lines[0])
		}
		if len(lines) > 1 && lines[1] != "" {
			dirs = append(dirs, filepath.Join(filepath.SplitList(lines[1])[0], "bin"))
		}
		for _, d := range dirs {
			p := filepath.Join(d, s3ServerBin)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", errors.New("versitygw, the S3 server these tests run against, is not installed: " +
		"run `bash scripts/s3server.sh` (or `make deps-s3`; `make test` does it), " +
		"which builds the pinned version into $(go env GOPATH)/bin")
}

// bucket makes a new, empty bucket.
func (s *s3Server) bucket(t *testing.T) string {
	t.Helper()
	name := "b-" + randHex(6)
	if err := s.client.MakeBucket(t.Context(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return name
}

// everything lists the bucket's keys and unfinished multipart uploads
// ("upload:<key>"), sorted.
func (s *s3Server) everything(t *testing.T, bucket string) []string {
	t.Helper()
	var out []string
	for o := range s.client.ListObjects(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", bucket, o.Err)
		}
		out = append(out, o.Key)
	}
	for u := range s.client.ListIncompleteUploads(t.Context(), bucket, "", true) {
		if u.Err != nil {
			t.Fatalf("list uploads %s: %v", bucket, u.Err)
		}
		out = append(out, "upload:"+u.Key)
	}
	slices.Sort(out)
	return out
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

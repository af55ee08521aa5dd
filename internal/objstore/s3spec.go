package objstore

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
)

// The environment variables S3 credentials come from, ours first.
const (
	EnvS3AccessKey  = "GRANARY_S3_ACCESS_KEY"
	EnvS3SecretKey  = "GRANARY_S3_SECRET_KEY"
	envAWSAccessKey = "AWS_ACCESS_KEY_ID"
	envAWSSecretKey = "AWS_SECRET_ACCESS_KEY"
	envAWSToken     = "AWS_SESSION_TOKEN"
)

// defaultS3Endpoint is AWS's; other servers name theirs with endpoint=.
const defaultS3Endpoint = "s3.amazonaws.com"

// ParseS3Spec reads an S3 store spec:
//
//	s3://bucket[/prefix][?endpoint=host:port][&region=name][&insecure=1][&lookup=path|dns]
//
// endpoint defaults to AWS (s3.amazonaws.com); insecure=1 speaks plain
// HTTP; lookup forces path-style (host/bucket) or virtual-host-style
// (bucket.host) addressing, which the client otherwise guesses. The
// credentials come from getenv, never from the spec, which ends up in
// logs and process listings: GRANARY_S3_ACCESS_KEY and
// GRANARY_S3_SECRET_KEY, or else AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
// and AWS_SESSION_TOKEN. Errors show the spec without its query.
func ParseS3Spec(spec string, getenv func(string) string) (S3Config, error) {
	bad := func(format string, a ...any) (S3Config, error) {
		return S3Config{}, fmt.Errorf("objstore: s3 spec %s: %s", redact(spec), fmt.Sprintf(format, a...))
	}
	// url.Parse's errors quote the input, so they are not passed on.
	u, err := url.Parse(spec)
	if err != nil || u.Scheme != "s3" || u.Opaque != "" {
		return bad("not of the form s3://bucket/prefix?endpoint=host:port")
	}
	if u.User != nil {
		return bad("credentials do not go in the spec; set %s and %s", EnvS3AccessKey, EnvS3SecretKey)
	}
	cfg := S3Config{Bucket: u.Host, Endpoint: defaultS3Endpoint, PartSize: DefaultPartSize}
	if !validBucket.MatchString(cfg.Bucket) || strings.Contains(cfg.Bucket, "..") {
		return bad("bucket %q is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')", cfg.Bucket)
	}
	if u.Fragment != "" {
		return bad("a '#' has no meaning in a store spec")
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if CheckName(p) != nil {
			return bad("prefix %q is not made of object name segments (letters, digits, '.', '_', '-')", p)
		}
		cfg.Prefix = p + "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("the query is not name=value pairs")
	}
	for name, vals := range q {
		if len(vals) != 1 {
			return bad("%s is given %d times", safeParam(name), len(vals))
		}
		v := vals[0]
		switch name {
		case "endpoint":
			if strings.Contains(v, "://") || strings.ContainsAny(v, "/@") {
				return bad("endpoint %q is not host[:port] (no scheme; insecure=1 for http)", v)
			}
			if h, p, err := net.SplitHostPort(v); err == nil {
				if n, err := strconv.Atoi(p); h == "" || err != nil || n < 1 || n > 65535 {
					return bad("endpoint %q is not host[:port]", v)
				}
			} else if v == "" || strings.Contains(v, ":") {
				return bad("endpoint %q is not host[:port]", v)
			}
			cfg.Endpoint = v
		case "region":
			if !validRegion.MatchString(v) {
				return bad("region %q is not a region name", v)
			}
			cfg.Region = v
		case "insecure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return bad("insecure=%q: want 1 or 0", v)
			}
			cfg.Insecure = b
		case "lookup":
			switch v {
			case "path":
				cfg.Lookup = minio.BucketLookupPath
			case "dns":
				cfg.Lookup = minio.BucketLookupDNS
			case "auto":
				cfg.Lookup = minio.BucketLookupAuto
			default:
				return bad("lookup=%q: want path, dns or auto", v)
			}
		default:
			if credentialParam.MatchString(name) {
				return bad("credentials do not go in the spec; set %s and %s", EnvS3AccessKey, EnvS3SecretKey)
			}
			return bad("unknown parameter %s (want endpoint, region, insecure, lookup)", safeParam(name))
		}
	}
	switch {
	case getenv(EnvS3AccessKey) != "" || getenv(EnvS3SecretKey) != "":
		cfg.AccessKey, cfg.SecretKey = getenv(EnvS3AccessKey), getenv(EnvS3SecretKey)
		if cfg.AccessKey == "" || cfg.SecretKey == "" {
			return bad("set both %s and %s", EnvS3AccessKey, EnvS3SecretKey)
		}
	case getenv(envAWSAccessKey) != "" || getenv(envAWSSecretKey) != "":
		cfg.AccessKey, cfg.SecretKey = getenv(envAWSAccessKey), getenv(envAWSSecretKey)
		cfg.SessionToken = getenv(envAWSToken)
		if cfg.AccessKey == "" || cfg.SecretKey == "" {
			return bad("set both %s and %s", envAWSAccessKey, envAWSSecretKey)
		}
	default:
		return bad("no credentials: set %s and %s (or %s and %s)", EnvS3AccessKey, EnvS3SecretKey, envAWSAccessKey, envAWSSecretKey)
	}
	return cfg, nil
}

var (
	validBucket     = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	validRegion     = regexp.MustCompile(`^[a-z0-9-]{1,40}$`)
	credentialParam = regexp.MustCompile(`(?i)key|secret|token|pass|cred|sig`)
	plainParam      = regexp.MustCompile(`^[a-z_-]{1,20}$`)
)

// safeParam is a query parameter's name fit for an error message: a name
// that looks like anything but a word may be a pasted secret.
func safeParam(name string) string {
	if plainParam.MatchString(name) {
		return name
	}
	return "(a parameter)"
}

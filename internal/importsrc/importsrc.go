// Package importsrc is the source side of an import: an outside Redis db a
// tenant names by URL, which Granary only reads (PING, CONFIG GET, DBSIZE,
// RANDOMKEY, MEMORY USAGE, SCAN, DUMP, PEXPIRETIME and a keyspace
// subscription; never a write, never CONFIG SET, never MIGRATE, which
// runs on the source). The API checks a source with it before recording
// the job, the keeper copies from it; both dial only through a
// netguard.Guard that refuses internal addresses and Granary's own servers.
package importsrc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/granary-db/granary/internal/netguard"
	"github.com/redis/go-redis/v9"
)

// Errors of a source check; the messages say what to do, and never hold
// the source's password.
var (
	ErrBadURL        = errors.New("bad source URL")
	ErrRefused       = netguard.ErrRefused
	ErrUnreachable   = errors.New("cannot reach the source")
	ErrNeedsPassword = errors.New("the source needs a password: give it in the URL, redis://user:password@host:port")
	ErrWrongPassword = errors.New("the source refused the password")
	ErrDBRange       = errors.New("the source has no such db")
	ErrNotify        = errors.New("keyspace notifications are off on the source: run CONFIG SET notify-keyspace-events KEA on it, then try again")
	ErrTooBig        = errors.New("the source db is bigger than the target's quota")
	ErrSource        = errors.New("the source refused a read")
)

// MaxDB bounds the db number a source may be asked for.
const MaxDB = 1 << 16

// Source is a parsed source: where, as whom, which db.
type Source struct {
	Addr     string // host:port
	User     string // "" for the default user
	Password string
	DB       int
}

// Parse reads raw, which must be redis://[user[:password]@]host:port with
// nothing after the port (no path but "/", no query, no fragment), and
// the db number. Its errors never repeat the password.
func Parse(raw string, db int) (Source, error) {
	if len(raw) > 1024 {
		return Source{}, fmt.Errorf("%w: longer than 1024 bytes", ErrBadURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Source{}, fmt.Errorf("%w: use redis://[user:password@]host:port", ErrBadURL)
	}
	switch {
	case u.Scheme != "redis":
		return Source{}, fmt.Errorf("%w: the scheme must be redis:// (TLS and unix sockets are not supported)", ErrBadURL)
	case u.Opaque != "" || (u.Path != "" && u.Path != "/") || u.RawPath != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return Source{}, fmt.Errorf("%w: nothing may follow host:port; give the db number as \"db\"", ErrBadURL)
	case db < 0 || db > MaxDB:
		return Source{}, fmt.Errorf("%w: db %d is out of range 0-%d", ErrBadURL, db, MaxDB)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" || port == "" {
		return Source{}, fmt.Errorf("%w: give host:port", ErrBadURL)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Source{}, fmt.Errorf("%w: bad port", ErrBadURL)
	}
	if strings.ContainsAny(host, " \t\r\n/\\%") {
		return Source{}, fmt.Errorf("%w: bad host", ErrBadURL)
	}
	s := Source{Addr: net.JoinHostPort(host, port), DB: db}
	if u.User != nil {
		s.User = u.User.Username()
		s.Password, _ = u.User.Password()
		if s.User != "" && s.Password == "" {
			return Source{}, fmt.Errorf("%w: a user needs a password, redis://user:password@host:port", ErrBadURL)
		}
	}
	return s, nil
}

// Redacted is the source as it may be shown: redis://host:port.
func (s Source) Redacted() string { return "redis://" + s.Addr }

// NewGuard is the guard sources are dialled through: allow as
// netguard.New takes it, and deny (Granary's own servers, host:port)
// refused whatever allow says. A denied name that does not resolve now is
// skipped rather than failing every import (an IP literal always
// resolves); it returns an error only for a bad allow-list.
func NewGuard(allow, deny []string) (*netguard.Guard, error) {
	g, err := netguard.New(allow)
	if err != nil {
		return nil, err
	}
	for _, a := range deny {
		if a != "" {
			_ = g.Deny(a)
		}
	}
	return g, nil
}

// SplitAllow splits a comma-separated allow-list flag ("" is none).
func SplitAllow(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// DialTimeout bounds the connection to a source.
const DialTimeout = 3 * time.Second

// Client is a client of the source's db whose every connection goes
// through g. Creating it does no I/O.
func (s Source) Client(g *netguard.Guard, pool int) *redis.Client {
	d := g.Dialer(DialTimeout)
	return redis.NewClient(&redis.Options{Addr: s.Addr, Username: s.User, Password: s.Password, DB: s.DB,
		Protocol: 2, PoolSize: pool, MaxRetries: -1, DialerRetries: 1, DisableIdentity: true,
		DialTimeout: DialTimeout, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}})
}

// Classify maps an error of a source command to one of the package's
// errors; the message never holds the password or what a refused address
// answered.
func Classify(err error) error {
	if err == nil {
		return nil
	}
	var re redis.Error
	switch {
	case errors.Is(err, ErrRefused):
		msg, why := err.Error(), ""
		if i := strings.Index(msg, ErrRefused.Error()); i >= 0 {
			why = msg[i+len(ErrRefused.Error()):]
		}
		return &refusal{"the source address is not allowed" + why}
	case errors.As(err, &re):
		msg := re.Error()
		switch {
		case strings.HasPrefix(msg, "NOAUTH"):
			return ErrNeedsPassword
		case strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"),
			strings.Contains(msg, "without any password configured"):
			return ErrWrongPassword
		case strings.Contains(msg, "DB index is out of range"):
			return ErrDBRange
		}
		return fmt.Errorf("%w: %s", ErrSource, clip(msg))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return ErrUnreachable
}

// refusal is a guard's refusal in the words a tenant reads.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return ErrRefused }

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// Check is what the API asks of a source before recording an import: it
// answers as the URL says, its db exists, keyspace notifications are on
// (K and A of notify-keyspace-events) and the db's sampled size fits
// quota. It returns the estimated bytes and one of the package's errors.
func Check(ctx context.Context, c *redis.Client, quota int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*DialTimeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return 0, Classify(err)
	}
	cfg, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return 0, fmt.Errorf("cannot read notify-keyspace-events (%w); make sure CONFIG SET notify-keyspace-events KEA was run on the source, and let the user run CONFIG GET", Classify(err))
	}
	if !NotifyOn(cfg["notify-keyspace-events"]) {
		return 0, ErrNotify
	}
	size, err := Estimate(ctx, c)
	if err != nil {
		return 0, err
	}
	if size > quota {
		return size, fmt.Errorf("%w: about %d bytes, quota %d: import into a bigger db", ErrTooBig, size, quota)
	}
	return size, nil
}

// NotifyOn says whether a notify-keyspace-events value publishes keyspace
// events of every class.
func NotifyOn(v string) bool { return strings.Contains(v, "K") && strings.Contains(v, "A") }

// Estimate is the db's size in bytes: its key count times the mean MEMORY
// USAGE of up to 64 random keys.
func Estimate(ctx context.Context, c *redis.Client) (int64, error) {
	n, err := c.DBSize(ctx).Result()
	if err != nil || n == 0 {
		return 0, Classify(err)
	}
	const sample = 64
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for range sample {
			p.RandomKey(ctx)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, Classify(err)
	}
	keys := make([]string, 0, sample)
	for _, cmd := range cmds {
		if k := cmd.(*redis.StringCmd).Val(); k != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	sizes, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.MemoryUsage(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("cannot size the source db (MEMORY USAGE): %w", Classify(err))
	}
	var sum int64
	for _, cmd := range sizes {
		sum += cmd.(*redis.IntCmd).Val()
	}
	return sum / int64(len(keys)) * n, nil
}

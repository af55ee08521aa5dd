package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// granaryCLI runs one `granary args…` client command with the environment
// of a dev user: no flags for the API or token, GRANARY_DEV_DIR naming the
// dev cluster's folder, a profile folder of its own. It returns the exit
// status and the outputs.
func granaryCLI(t *testing.T, home, devDir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(granaryBin(t), args...)
	cmd.Dir = home
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home + "/config", "GRANARY_DEV_DIR=" + devDir, "PATH=/usr/bin:/bin"}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// TestCLI drives a dev cluster with the CLI alone, as a tenant would: sign
// up, create a db, write through the proxy, resize it live and watch the
// job, find the data still there, drop the db, list none. Bad flags exit 2
// and a wrong token 1, each with one line.
func TestCLI(t *testing.T) {
	_, _, dir := startDev(t)
	home := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		code, out, errs := granaryCLI(t, home, dir, args...)
		if code != 0 {
			t.Fatalf("granary %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}

	var signup struct{ Tenant, Token, User, Password string }
	decode(cli("signup", "acme", "--save", "-o", "json"), &signup)
	if signup.Tenant != "acme" || signup.User != "acme" || signup.Token == "" || signup.Password == "" {
		t.Fatalf("signup: %+v", signup)
	}

	// From here on the saved profile's token is acme's, not the demo's.
	type db struct {
		Index            int
		Size, State, URL string
		WriteMode        string `json:"write_mode"`
	}
	var created db
	decode(cli("db", "create", "--size", "64M", "-o", "json"), &created)
	if created.Index != 0 || created.Size != "64M" || created.State != "active" || !strings.HasPrefix(created.URL, "redis://acme@") {
		t.Fatalf("db create: %+v", created)
	}
	opt, err := redis.ParseURL(created.URL)
	if err != nil {
		t.Fatal(err)
	}
	opt.Password = signup.Password
	rc := redis.NewClient(opt)
	defer rc.Close()
	ctx := t.Context()
	if err := rc.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
		t.Fatalf("SET through the proxy: %v", err)
	}
	// A few MB, so that the copy has bytes to count.
	pipe := rc.Pipeline()
	for i := 0; i < 2000; i++ {
		pipe.Set(ctx, fmt.Sprintf("k%d", i), strings.Repeat("x", 1000), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	var ref struct{ Job string }
	decode(cli("db", "resize", "0", "--size", "256M", "-o", "json"), &ref)
	if ref.Job == "" {
		t.Fatal("db resize: no job")
	}
	var job struct {
		ID, Kind, State, Step, Error string
		Progress                     float64
		BytesCopied                  int64 `json:"bytes_copied"`
	}
	decode(cli("job", "watch", ref.Job, "-o", "json"), &job)
	if job.ID != ref.Job || job.Kind != "resize" || job.State != "done" || job.Progress != 1 || job.BytesCopied < 2_000_000 {
		t.Fatalf("job watch: %+v", job)
	}
	var shown db
	decode(cli("db", "show", "0", "-o", "json"), &shown)
	if shown.Size != "256M" || shown.State != "active" {
		t.Fatalf("db show after the resize: %+v", shown)
	}
	if got, err := rc.Get(ctx, "greeting").Result(); err != nil || got != "hello" {
		t.Fatalf("GET after the resize: %q, %v", got, err)
	}
	if n, err := rc.DBSize(ctx).Result(); err != nil || n != 2001 {
		t.Fatalf("DBSIZE after the resize: %d, %v; want 2001", n, err)
	}

	decode(cli("db", "set-mode", "0", "async", "-o", "json"), &shown)
	if shown.WriteMode != "async" {
		t.Fatalf("db set-mode: %+v", shown)
	}

	// Off a terminal, --watch prints a line per step and "done".
	out := cli("db", "drop", "0", "--watch")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 || lines[len(lines)-1] != "done" {
		t.Fatalf("db drop --watch:\n%s", out)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "step ") {
			t.Fatalf("db drop --watch: line %q:\n%s", l, out)
		}
	}
	var dbs []db
	decode(cli("db", "list", "-o", "json"), &dbs)
	if len(dbs) != 0 {
		t.Fatalf("db list after the drop: %+v", dbs)
	}
	if out := cli("db", "list"); !strings.HasPrefix(out, "no dbs") {
		t.Fatalf("db list table: %q", out)
	}

	// Admin commands take cluster.json's admin token.
	var pools []struct {
		Size        string
		Total, Free int
	}
	decode(cli("admin", "pools", "-o", "json"), &pools)
	for _, p := range pools {
		if (p.Size == "64M" || p.Size == "256M") && (p.Total != 16 || p.Free != 16) {
			t.Fatalf("admin pools: %+v, want every slot free again", pools)
		}
	}
	if out := cli("admin", "jobs"); !strings.Contains(out, ref.Job) || !strings.HasPrefix(out, "ID ") {
		t.Fatalf("admin jobs: %s", out)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"db", "create", "--sise", "64M"}, 2, "granary: unknown flag: --sise (see 'granary db create --help')\n"},
		{[]string{"db", "resize", "0"}, 2, "granary: required flag(s) \"size\" not set (see 'granary db resize --help')\n"},
		{[]string{"db", "list", "--token", "gt_wrong"}, 1, "granary: invalid token\n"},
		{[]string{"db", "show", "7"}, 1, "granary: no db 7\n"},
		{[]string{"db", "create", "--size", "48M"}, 1, "granary: "},
	} {
		code, out, errs := granaryCLI(t, home, dir, tc.args...)
		if code != tc.code || out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, tc.want) {
			t.Fatalf("granary %s: exit %d, stdout %q, stderr %q; want exit %d and one line %q",
				strings.Join(tc.args, " "), code, out, errs, tc.code, tc.want)
		}
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/pools"
)

// TestTenantLimits sets limits over REST (`granary api`) and sees the
// `granary proxy` process enforce them: a tenant's third connection is
// refused at AUTH with Redis's maxclients text, and a db over its ops/s
// gets the rate limit error, while another tenant is not limited.
func TestTenantLimits(t *testing.T) {
	c := startSizedCluster(t, 0, pools.Size64M)
	ctx := t.Context()
	if _, err := c.store.CreateTenant(ctx, "test", "limited", "tok-limited", "pw-limited"); err != nil {
		t.Fatal(err)
	}
	_, api := startGranaryListening(t, "--addr", "api", "--metadb-url", "redis://"+c.store.Client().Options().Addr, "--admin-token", "admin-e2e")
	put := func(tenant, body string) {
		t.Helper()
		redistest.WaitFor(t, 10*time.Second, "PUT limits of "+tenant, func() bool {
			rq, _ := http.NewRequestWithContext(ctx, "PUT", "http://"+api+"/v1/admin/tenants/"+tenant+"/limits", bytes.NewBufferString(body))
			rq.Header.Set("Authorization", "Bearer admin-e2e")
			resp, err := http.DefaultClient.Do(rq)
			if err != nil {
				return false // the API is still starting
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT %s: %s", body, resp.Status)
			}
			return true
		})
	}
	auth := func(user, pass string) (net.Conn, string) {
		nc, err := net.Dial("tcp", c.proxy)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(nc, "AUTH %s %s\r\n", user, pass)
		line, _ := bufio.NewReader(nc).ReadString('\n')
		return nc, strings.TrimSpace(line)
	}

	put("limited", `{"max_connections": 2}`)
	redistest.WaitFor(t, 10*time.Second, "the third connection refused", func() bool {
		var got []string
		for i := 0; i < 3; i++ {
			nc, line := auth("limited", "pw-limited")
			defer nc.Close()
			got = append(got, line)
		}
		if got[0] != "+OK" || got[1] != "+OK" {
			t.Fatalf("first two AUTHs: got %q", got)
		}
		return got[2] == "-ERR max number of clients reached"
	})
	// acme is not limited.
	for i := 0; i < 4; i++ {
		nc, line := auth("acme", "pw")
		defer nc.Close()
		if line != "+OK" {
			t.Fatalf("acme AUTH %d: %q", i, line)
		}
	}

	put("acme", `{"ops_per_sec": 5}`)
	cl := c.client()
	redistest.WaitFor(t, 10*time.Second, "acme's commands rate limited", func() bool {
		pl := cl.Pipeline()
		for i := 0; i < 20; i++ {
			pl.Get(ctx, "ready")
		}
		cmds, _ := pl.Exec(ctx)
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				if err.Error() != "ERR rate limit exceeded for this db: 5 ops/s (try again later)" {
					t.Fatalf("GET: %v", err)
				}
				return true
			}
		}
		return false
	})
	put("acme", `{}`)
	redistest.WaitFor(t, 10*time.Second, "acme's limit lifted", func() bool {
		pl := cl.Pipeline()
		for i := 0; i < 20; i++ {
			pl.Get(ctx, "ready")
		}
		_, err := pl.Exec(ctx)
		return err == nil
	})
}

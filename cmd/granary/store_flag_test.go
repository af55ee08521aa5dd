package main

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// The keeper and the API hand --store (or GRANARY_STORE) to objstore.Open,
// S3 specs included: a bad spec stops the command, before it touches
// metadb, with an error that says what is wrong and shows no credential.
// (internal/objstore runs S3 specs against a real S3 server.)
func TestStoreFlagS3(t *testing.T) {
	for _, v := range []string{"GRANARY_STORE", "GRANARY_S3_ACCESS_KEY", "GRANARY_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		t.Setenv(v, "")
	}
	cmds := []struct {
		name string
		run  func(context.Context, zerolog.Logger, []string) error
		args []string
	}{
		{"keeper", runKeeper, nil},
		{"api", runAPI, []string{"--admin-token", "t"}},
	}
	for _, c := range cmds {
		for _, tc := range []struct {
			name, flag, env, want string
			creds                 bool
		}{
			{name: "bad parameter", flag: "s3://bkt?endpoint=h:9000&insecure=maybe", creds: true, want: `insecure="maybe": want 1 or 0`},
			{name: "no credentials", flag: "s3://bkt?endpoint=h:9000", want: "no credentials: set GRANARY_S3_ACCESS_KEY"},
			{name: "credentials in the spec, from the environment", env: "s3://AKIAX:pwsecret@bkt", creds: true, want: "credentials do not go in the spec"},
		} {
			t.Run(c.name+"/"+tc.name, func(t *testing.T) {
				if tc.creds {
					t.Setenv("GRANARY_S3_ACCESS_KEY", "AKIAX")
					t.Setenv("GRANARY_S3_SECRET_KEY", "envsecret")
				}
				t.Setenv("GRANARY_STORE", tc.env)
				args := append([]string{}, c.args...)
				if tc.flag != "" {
					args = append(args, "--store", tc.flag)
				}
				err := c.run(t.Context(), zerolog.Nop(), args)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s %v: %v, want an error with %q", c.name, args, err, tc.want)
				}
				for _, secret := range []string{"AKIAX", "pwsecret", "envsecret"} {
					if strings.Contains(err.Error(), secret) {
						t.Fatalf("the error shows %s: %v", secret, err)
					}
				}
			})
		}
	}
}

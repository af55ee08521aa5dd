package metadb

import (
	"errors"
	"testing"
)

func TestTenants(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	v0, _ := s.Version(ctx)
	tn, err := s.CreateTenant(ctx, "api", "acme", "token-1", "password-1")
	if err != nil {
		t.Fatal(err)
	}
	if tn.TokenHash == "token-1" || tn.PasswordHash == "password-1" || !SecretMatches(tn.PasswordHash, "password-1") {
		t.Errorf("tenant secrets: got token hash %q password hash %q, want SHA-256 hashes", tn.TokenHash, tn.PasswordHash)
	}
	if v, _ := s.Version(ctx); v != v0+1 {
		t.Errorf("version after CreateTenant: got %d, want %d", v, v0+1)
	}
	if _, err := s.CreateTenant(ctx, "api", "acme", "token-2", "password-2"); !errors.Is(err, ErrExists) {
		t.Errorf("CreateTenant twice: got %v, want %v", err, ErrExists)
	}
	tests := []struct {
		name  string
		token string
		want  string
		err   error
	}{
		{name: "right token", token: "token-1", want: "acme"},
		{name: "token of the refused duplicate", token: "token-2", err: ErrNotFound},
		{name: "unknown token", token: "nope", err: ErrNotFound},
		{name: "empty token", token: "", err: ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.TenantByToken(ctx, tc.token)
			if !errors.Is(err, tc.err) {
				t.Fatalf("TenantByToken: got %v, want %v", err, tc.err)
			}
			if err == nil && got.Name != tc.want {
				t.Errorf("TenantByToken: got %q, want %q", got.Name, tc.want)
			}
		})
	}
	if all, err := s.Tenants(ctx); err != nil || len(all) != 1 || all[0].Name != "acme" {
		t.Errorf("Tenants: got %v, %v, want [acme]", all, err)
	}
}

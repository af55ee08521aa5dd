package tenantapi

import "testing"

func TestRedactUser(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"redis://:s3cret@10.0.0.1:6379", "…@10.0.0.1:6379"},
		{"user:pw@host:1", "…@host:1"},
		{"host:6379", "host:6379"},
	} {
		if got := redactUser(tc.in); got != tc.want {
			t.Errorf("redactUser(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

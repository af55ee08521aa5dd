package tenantapi

import (
	"strings"
	"testing"

	"github.com/granary-db/granary/metadb"
)

func TestViewDBWarning(t *testing.T) {
	tests := []struct {
		name        string
		used, quota int64
		banned      bool
		want        string // substring; "" means no warning
	}{
		{"empty", 0, 100, false, ""},
		{"79 percent", 79, 100, false, ""},
		{"80 percent", 80, 100, false, "80% of its quota"},
		{"95 percent", 95, 100, false, "95% of its quota"},
		{"banned", 120, 100, true, "over quota"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := viewDB(&metadb.DB{UsedBytes: tc.used, QuotaBytes: tc.quota, Banned: tc.banned})
			if tc.want == "" && v.Warning != "" || !strings.Contains(v.Warning, tc.want) {
				t.Fatalf("got warning %q, want %q", v.Warning, tc.want)
			}
		})
	}
}

package tenantapi

import (
	"testing"
	"time"
)

func TestRefusalGate(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	type call struct {
		key  string
		at   time.Duration
		want bool
	}
	tests := []struct {
		name  string
		calls []call
	}{
		{"one key up to its share", []call{{"a", 0, true}, {"a", time.Second, true}, {"a", 2 * time.Second, false}}},
		{"other keys have their own share", []call{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"b", 0, true}}},
		{"the total bounds all keys", []call{{"a", 0, true}, {"b", 0, true}, {"c", 0, true}, {"d", 0, false}}},
		{"a new window starts afresh", []call{{"a", 0, true}, {"a", 0, true}, {"a", 0, false}, {"a", time.Minute, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newRefusalGate(time.Minute, 2, 3)
			for i, c := range tc.calls {
				if got := g.allow(c.key, t0.Add(c.at)); got != c.want {
					t.Fatalf("call %d (%s at +%v): got %v, want %v", i, c.key, c.at, got, c.want)
				}
			}
		})
	}
}

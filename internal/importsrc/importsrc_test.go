package importsrc

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		db   int
		want Source
		err  bool
	}{
		{"plain", "redis://example.com:6379", 0, Source{Addr: "example.com:6379"}, false},
		{"slash", "redis://example.com:6379/", 2, Source{Addr: "example.com:6379", DB: 2}, false},
		{"password only", "redis://:pw@1.2.3.4:6380", 0, Source{Addr: "1.2.3.4:6380", Password: "pw"}, false},
		{"user and password", "redis://u:p%40ss@[2001:db8::1]:7000", 0, Source{Addr: "[2001:db8::1]:7000", User: "u", Password: "p@ss"}, false},
		{"user without password", "redis://u@h:1", 0, Source{}, true},
		{"https", "https://h:1", 0, Source{}, true},
		{"rediss", "rediss://h:1", 0, Source{}, true},
		{"unix", "unix:///tmp/redis.sock", 0, Source{}, true},
		{"path", "redis://h:1/0", 0, Source{}, true},
		{"dot path", "redis://h:1/../x", 0, Source{}, true},
		{"query", "redis://h:1?db=2", 0, Source{}, true},
		{"empty query", "redis://h:1?", 0, Source{}, true},
		{"fragment", "redis://h:1#x", 0, Source{}, true},
		{"opaque", "redis:h:1", 0, Source{}, true},
		{"no port", "redis://h", 0, Source{}, true},
		{"port 0", "redis://h:0", 0, Source{}, true},
		{"big port", "redis://h:70000", 0, Source{}, true},
		{"no host", "redis://:6379", 0, Source{}, true},
		{"negative db", "redis://h:1", -1, Source{}, true},
		{"huge db", "redis://h:1", MaxDB + 1, Source{}, true},
		{"long", "redis://" + strings.Repeat("a", 2000) + ":1", 0, Source{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.raw, tc.db)
			if (err != nil) != tc.err || (err == nil && got != tc.want) {
				t.Fatalf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.err)
			}
			if err != nil && !errors.Is(err, ErrBadURL) {
				t.Fatalf("error %v is not ErrBadURL", err)
			}
			if err == nil && got.Redacted() != "redis://"+tc.want.Addr {
				t.Fatalf("redacted %q", got.Redacted())
			}
		})
	}
}

func TestNotifyOn(t *testing.T) {
	for v, want := range map[string]bool{"": false, "KEA": true, "AK": true, "AKE": true, "Kg$": false, "EA": false} {
		if got := NotifyOn(v); got != want {
			t.Errorf("NotifyOn(%q) = %v, want %v", v, got, want)
		}
	}
}

// FuzzParse: no input panics, an accepted one is redis://host:port with
// nothing after it, and no error repeats the password.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"redis://:pw@h:1", "redis://u:p@[::1]:2/", "redis://h:1/0?x#y", "http://h", "redis://%zz@h:1"} {
		f.Add(s, 0)
	}
	f.Fuzz(func(t *testing.T, raw string, db int) {
		s, err := Parse(raw, db)
		if err != nil {
			if i := strings.Index(raw, "@"); i > 0 {
				if j := strings.LastIndex(raw[:i], ":"); j > 0 && len(raw[j+1:i]) >= 6 && strings.Contains(err.Error(), raw[j+1:i]) {
					t.Fatalf("error %q repeats the password", err)
				}
			}
			return
		}
		if s.Addr == "" || s.DB != db || strings.Contains(s.Redacted(), "@") {
			t.Fatalf("accepted %q as %+v", raw, s)
		}
	})
}

func TestNewGuard(t *testing.T) {
	g, err := NewGuard([]string{"127.0.0.0/8"}, []string{"127.0.0.1:7000", "no-such-host.invalid:1", "bad", ""})
	if err != nil {
		t.Fatal(err)
	}
	// A denied server of this host is refused on every loopback address
	// (it may listen on 0.0.0.0); another port on loopback is allowed.
	for addr, allowed := range map[string]bool{"127.0.0.1:7000": false, "127.0.0.2:7000": false, "127.0.0.2:7001": true, "10.0.0.1:6379": false, "8.8.8.8:6379": true} {
		err := g.Control("tcp", addr, nil)
		if (err == nil) != allowed || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("%s: got %v, want allowed %v", addr, err, allowed)
		}
	}
	if _, err := NewGuard([]string{"not-a-cidr"}, nil); err == nil {
		t.Error("a bad allow-list was accepted")
	}
}

package pools

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePersistence(t *testing.T) {
	for in, want := range map[string]Persistence{"": PersistNone, "none": PersistNone, "aof-everysec": PersistAOFEverysec, "aof-always": PersistAOFAlways} {
		if got, err := ParsePersistence(in); err != nil || got != want {
			t.Errorf("ParsePersistence(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"aof", "AOF-ALWAYS", "rdb", strings.Repeat("x", 100)} {
		if _, err := ParsePersistence(in); !errors.Is(err, ErrBadPersistence) || strings.Contains(err.Error(), strings.Repeat("x", 40)) {
			t.Errorf("ParsePersistence(%q) = %v, want a short ErrBadPersistence", in, err)
		}
	}
}

func TestCheckPersistence(t *testing.T) {
	off := ServerView{Addr: "m:1", AppendOnly: "no", AppendFsync: "everysec"}
	everysec := ServerView{Addr: "r:1", AppendOnly: "yes", AppendFsync: "everysec"}
	always := ServerView{Addr: "r:1", AppendOnly: "yes", AppendFsync: "always"}
	tests := []struct {
		p       Persistence
		servers []ServerView
		want    string // part of the refusal; "" for a pass
	}{
		{PersistNone, []ServerView{off, off}, ""},
		{PersistAOFEverysec, []ServerView{everysec, everysec}, ""},
		{PersistAOFAlways, []ServerView{always, always}, ""},
		{PersistNone, []ServerView{off, everysec}, "r:1 runs with persistence aof-everysec"},
		{PersistAOFEverysec, []ServerView{off, everysec}, "m:1 runs with persistence none"},
		{PersistAOFAlways, []ServerView{always, everysec}, "r:1 runs with persistence aof-everysec (appendonly yes, appendfsync everysec), not aof-always"},
		{PersistAOFEverysec, []ServerView{{Addr: "x:1", AppendOnly: "yes", AppendFsync: "no"}}, "x:1 runs with persistence aof-no"},
	}
	for _, tc := range tests {
		err := CheckPersistence(tc.p, tc.servers...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s on %v: %v, want a pass", tc.p, tc.servers, err)
		case tc.want != "" && (!errors.Is(err, ErrPairCheck) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s on %v: %v, want %q", tc.p, tc.servers, err, tc.want)
		}
	}
}

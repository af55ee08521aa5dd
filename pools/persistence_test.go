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
	off := func(addr string) ServerView { return ServerView{Addr: addr, AppendOnly: "no", AppendFsync: "everysec"} }
	everysec := func(addr string) ServerView {
		return ServerView{Addr: addr, AppendOnly: "yes", AppendFsync: "everysec"}
	}
	always := func(addr string) ServerView { return ServerView{Addr: addr, AppendOnly: "yes", AppendFsync: "always"} }
	tests := []struct {
		p               Persistence
		master, replica ServerView
		want            string // part of the refusal; "" for a pass
	}{
		{PersistNone, off("m:1"), off("r:1"), ""},
		{PersistAOFEverysec, everysec("m:1"), everysec("r:1"), ""},
		{PersistAOFAlways, always("m:1"), always("r:1"), ""},
		{PersistAOFEverysec, off("m:1"), everysec("r:1"), ""}, // persistence on the replica only
		{PersistAOFAlways, off("m:1"), always("r:1"), ""},
		{PersistNone, off("m:1"), everysec("r:1"), "replica r:1 runs with persistence aof-everysec"},
		{PersistAOFEverysec, everysec("m:1"), off("r:1"), "replica r:1 runs with persistence none"},
		{PersistAOFAlways, always("m:1"), everysec("r:1"), "replica r:1 runs with persistence aof-everysec (appendonly yes, appendfsync everysec), not aof-always"},
		{PersistAOFAlways, everysec("m:1"), always("r:1"), "master m:1 runs with persistence aof-everysec (appendonly yes, appendfsync everysec), neither aof-always nor none"},
		{PersistNone, everysec("m:1"), off("r:1"), "master m:1 runs with persistence aof-everysec"},
		{PersistAOFEverysec, off("m:1"), ServerView{Addr: "x:1", AppendOnly: "yes", AppendFsync: "no"}, "replica x:1 runs with persistence aof-no"},
	}
	for _, tc := range tests {
		err := CheckPersistence(tc.p, tc.master, tc.replica)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s on %v, %v: %v, want a pass", tc.p, tc.master, tc.replica, err)
		case tc.want != "" && (!errors.Is(err, ErrPairCheck) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s on %v, %v: %v, want %q", tc.p, tc.master, tc.replica, err, tc.want)
		}
	}
}

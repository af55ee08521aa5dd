package pools

import (
	"errors"
	"reflect"
	"testing"
)

func TestPickPair(t *testing.T) {
	tests := []struct {
		name  string
		pairs []PairLoad
		want  string
		err   error
		empty bool // the error says the pool has no pairs too
	}{
		{
			name:  "most free wins",
			pairs: []PairLoad{{ID: "p1", Free: 3, Total: 16, Live: true}, {ID: "p2", Free: 9, Total: 16, Live: true}, {ID: "p3", Free: 5, Total: 16, Live: true}},
			want:  "p2",
		},
		{
			name:  "tie broken by id",
			pairs: []PairLoad{{ID: "p3", Free: 4, Live: true}, {ID: "p1", Free: 4, Live: true}, {ID: "p2", Free: 2, Live: true}},
			want:  "p1",
		},
		{
			name:  "tie order does not depend on input order",
			pairs: []PairLoad{{ID: "p1", Free: 4, Live: true}, {ID: "p3", Free: 4, Live: true}},
			want:  "p1",
		},
		{
			name:  "dead pair skipped even with most free",
			pairs: []PairLoad{{ID: "p1", Free: 16, Live: false}, {ID: "p2", Free: 1, Live: true}},
			want:  "p2",
		},
		{
			name:  "full pairs skipped",
			pairs: []PairLoad{{ID: "p1", Free: 0, Live: true}, {ID: "p2", Free: 1, Live: true}},
			want:  "p2",
		},
		{
			name:  "all full",
			pairs: []PairLoad{{ID: "p1", Free: 0, Live: true}, {ID: "p2", Free: 0, Live: true}},
			err:   ErrNoCapacity,
		},
		{
			name:  "only dead pairs",
			pairs: []PairLoad{{ID: "p1", Free: 8, Live: false}},
			err:   ErrNoCapacity,
		},
		{
			name:  "no pairs",
			err:   ErrNoCapacity,
			empty: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PickPair(Size64M, tc.pairs)
			if !errors.Is(err, tc.err) {
				t.Fatalf("PickPair error = %v, want %v", err, tc.err)
			}
			if got := errors.Is(err, ErrEmptyPool); got != tc.empty {
				t.Errorf("PickPair error %v is ErrEmptyPool: got %v, want %v", err, got, tc.empty)
			}
			if got != tc.want {
				t.Errorf("PickPair = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPickProxy(t *testing.T) {
	tests := []struct {
		name    string
		proxies []ProxyLoad
		want    string
		ok      bool
	}{
		{
			name:    "fewest dbs",
			proxies: []ProxyLoad{{ID: "a", DBs: 5, Live: true}, {ID: "b", DBs: 2, Conns: 100, Live: true}, {ID: "c", DBs: 3, Live: true}},
			want:    "b", ok: true,
		},
		{
			name:    "then fewest connections",
			proxies: []ProxyLoad{{ID: "a", DBs: 2, Conns: 9, Live: true}, {ID: "b", DBs: 2, Conns: 4, Live: true}},
			want:    "b", ok: true,
		},
		{
			name:    "then id",
			proxies: []ProxyLoad{{ID: "c", DBs: 1, Conns: 1, Live: true}, {ID: "a", DBs: 1, Conns: 1, Live: true}, {ID: "b", DBs: 1, Conns: 1, Live: true}},
			want:    "a", ok: true,
		},
		{
			name:    "dead proxy skipped",
			proxies: []ProxyLoad{{ID: "a", DBs: 0, Live: false}, {ID: "b", DBs: 7, Live: true}},
			want:    "b", ok: true,
		},
		{
			name:    "none live",
			proxies: []ProxyLoad{{ID: "a", Live: false}},
		},
		{
			name: "none at all",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]ProxyLoad(nil), tc.proxies...)
			got, ok := PickProxy(tc.proxies)
			if ok != tc.ok || got.ID != tc.want {
				t.Errorf("PickProxy = %q, %v, want %q, %v", got.ID, ok, tc.want, tc.ok)
			}
			if !reflect.DeepEqual(in, tc.proxies) {
				t.Errorf("PickProxy reordered its input: got %v, want %v", tc.proxies, in)
			}
		})
	}
}

func TestAssignPairs(t *testing.T) {
	tests := []struct {
		name       string
		pairKeeper map[string]string
		live       []KeeperLoad
		want       map[string]string
	}{
		{
			name:       "new pairs spread over the least loaded",
			pairKeeper: map[string]string{"p1": "", "p2": "", "p3": ""},
			live:       []KeeperLoad{{ID: "k1"}, {ID: "k2"}},
			want:       map[string]string{"p1": "k1", "p2": "k2", "p3": "k1"},
		},
		{
			name:       "orphan goes to the least loaded live keeper",
			pairKeeper: map[string]string{"p1": "k1", "p2": "k1", "p3": "k2", "p4": ""},
			live:       []KeeperLoad{{ID: "k1"}, {ID: "k2"}},
			want:       map[string]string{"p4": "k2"},
		},
		{
			name:       "pairs of a dead keeper move, pairs of live keepers stay",
			pairKeeper: map[string]string{"p1": "dead", "p2": "dead", "p3": "k1", "p4": "k2", "p5": "k2"},
			live:       []KeeperLoad{{ID: "k1"}, {ID: "k2"}},
			want:       map[string]string{"p1": "k1", "p2": "k1"},
		},
		{
			name:       "all assigned to live keepers: no change even if unbalanced",
			pairKeeper: map[string]string{"p1": "k1", "p2": "k1", "p3": "k1"},
			live:       []KeeperLoad{{ID: "k1"}, {ID: "k2"}},
			want:       map[string]string{},
		},
		{
			name:       "no live keeper",
			pairKeeper: map[string]string{"p1": "", "p2": "dead"},
			live:       nil,
			want:       nil,
		},
		{
			name:       "no pairs",
			pairKeeper: map[string]string{},
			live:       []KeeperLoad{{ID: "k1"}},
			want:       map[string]string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AssignPairs(tc.pairKeeper, tc.live)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("AssignPairs = %v, want %v", got, tc.want)
			}
		})
	}
}

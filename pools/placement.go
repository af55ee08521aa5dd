package pools

import (
	"fmt"
	"sort"
)

// PairLoad is what placement needs to know of one pair.
type PairLoad struct {
	ID    string
	Free  int // free slots
	Total int // all slots
	Live  bool
}

// PickPair chooses the pair of a pool that gets the next db: the live pair
// with the most free slots, ties broken by id so the choice is stable.
// It returns ErrNoCapacity when no live pair has a free slot, wrapping
// ErrEmptyPool as well when there is no pair at all.
func PickPair(size Size, pairs []PairLoad) (string, error) {
	if len(pairs) == 0 {
		return "", fmt.Errorf("%w %s: %w", ErrNoCapacity, size, ErrEmptyPool)
	}
	best := -1
	for i, p := range pairs {
		if !p.Live || p.Free <= 0 {
			continue
		}
		if best < 0 || p.Free > pairs[best].Free || (p.Free == pairs[best].Free && p.ID < pairs[best].ID) {
			best = i
		}
	}
	if best < 0 {
		return "", fmt.Errorf("%w %s", ErrNoCapacity, size)
	}
	return pairs[best].ID, nil
}

// ProxyLoad is what placement needs to know of one proxy.
type ProxyLoad struct {
	ID    string
	Addr  string
	DBs   int // tenant dbs assigned to it
	Conns int // open client connections
	Live  bool
}

// PickProxy chooses the least-loaded live proxy for a new db: fewest dbs,
// then fewest connections, then id. ok is false when no proxy is live.
func PickProxy(proxies []ProxyLoad) (p ProxyLoad, ok bool) {
	live := make([]ProxyLoad, 0, len(proxies))
	for _, p := range proxies {
		if p.Live {
			live = append(live, p)
		}
	}
	if len(live) == 0 {
		return ProxyLoad{}, false
	}
	sort.Slice(live, func(i, j int) bool {
		a, b := live[i], live[j]
		if a.DBs != b.DBs {
			return a.DBs < b.DBs
		}
		if a.Conns != b.Conns {
			return a.Conns < b.Conns
		}
		return a.ID < b.ID
	})
	return live[0], true
}

// KeeperLoad is what assignment needs to know of one keeper.
type KeeperLoad struct {
	ID    string
	Pairs int
}

// AssignPairs decides which keeper watches each pair. Pairs whose keeper is
// live stay where they are; pairs without one (new, or their keeper died) go
// to the live keeper with the fewest pairs. It returns only the changes,
// pair id -> keeper id. With no live keeper it returns nothing.
func AssignPairs(pairKeeper map[string]string, live []KeeperLoad) map[string]string {
	if len(live) == 0 {
		return nil
	}
	load := map[string]int{}
	for _, k := range live {
		load[k.ID] = 0
	}
	var orphans []string
	for pair, k := range pairKeeper {
		if _, ok := load[k]; ok {
			load[k]++
		} else {
			orphans = append(orphans, pair)
		}
	}
	sort.Strings(orphans)
	ids := make([]string, 0, len(load))
	for id := range load {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := map[string]string{}
	for _, pair := range orphans {
		best := ids[0]
		for _, id := range ids[1:] {
			if load[id] < load[best] {
				best = id
			}
		}
		load[best]++
		out[pair] = best
	}
	return out
}

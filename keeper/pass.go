package keeper

// This file is the stop rule of a measurement pass, with no I/O: given
// what the pass has read so far, what its next round trip does and when it
// is over. measure (sizing.go) is the executor: it sends the round trips,
// feeds the replies into a pass, and asks it again.
//
// A round trip carries the MEMORY USAGE of the keys the previous SCAN
// returned and, while the pass still scans, the next SCAN. An exact pass
// scans the whole table once. A sampled pass starts at a random cursor and
// wraps around the end of the table; it reads a pilot sample, sizes the
// whole sample from the pilot's spread (sampleTarget), and stops once it
// has read that many keys or seen every key of the sampled stratum.

// pass is where one measurement pass stands between round trips. The
// executor keeps o, pending and seen up to date; next and after decide.
type pass struct {
	exact bool
	plan  samplePlan
	// o is what the pass has read so far: o.sampled.n counts the distinct
	// stratum-B keys read.
	o observation
	// pending is how many keys SCAN returned that are not read yet.
	pending int
	// seen is how many distinct stratum-B keys SCAN returned in all
	// (sampled passes; exact passes do not deduplicate).
	seen int64
	// scanning is whether SCAN calls remain to be sent; once false it
	// stays false.
	scanning bool
	// wraps counts the SCAN replies with cursor 0: the end of the table.
	wraps int
	// target is a sampled pass's sample size, decided once after the
	// pilot; -1 before.
	target int64
}

// roundTrip is what a pass's next round trip sends.
type roundTrip int

const (
	// passDone: nothing; the pass is over.
	passDone roundTrip = iota
	// passRead: the MEMORY USAGE of the pending keys only.
	passRead
	// passScan: the next SCAN, with the MEMORY USAGE of the pending keys.
	passScan
)

func (r roundTrip) String() string {
	switch r {
	case passDone:
		return "done"
	case passRead:
		return "read"
	case passScan:
		return "scan"
	}
	return "roundTrip(?)"
}

// newPass is a pass over a db of which o says what was read before the
// first SCAN (its key count and certain stratum). An empty db has nothing
// to scan.
func newPass(o observation, exact bool, plan samplePlan) pass {
	return pass{exact: exact, plan: plan, o: o, scanning: o.keys > 0, target: -1}
}

// next decides the next round trip, and returns the pass as it stands once
// that is decided (it may stop scanning). A sampled pass that has read its
// target is done even with keys pending: keys scanned but not read are
// simply not in the sample. One whose pending keys would reach the target
// reads them without scanning further.
func (p pass) next() (pass, roundTrip) {
	if !p.exact && p.target >= 0 {
		if p.o.sampled.n >= p.target {
			return p, passDone
		}
		if p.o.sampled.n+int64(p.pending) >= p.target {
			p.scanning = false
		}
	}
	switch {
	case p.scanning:
		return p, passScan
	case p.pending > 0:
		return p, passRead
	}
	return p, passDone
}

// after folds in a round trip's replies, once the executor has added the
// keys it read to o and set pending and seen from the SCAN reply: cursor is
// that reply's next cursor, ignored when the round trip had no SCAN (when
// next did not return passScan). SCAN ends at the end of the table for an
// exact pass; a sampled pass started midway goes on from the beginning and
// has seen every key once it has wrapped twice, or once it has seen as many
// distinct keys as its stratum holds. A sampled pass decides its target
// once it has read the pilot, or earlier if SCAN ended first.
func (p pass) after(cursor uint64) pass {
	if p.scanning {
		if cursor == 0 {
			p.wraps++
			if p.exact || p.wraps > 1 {
				p.scanning = false
			}
		}
		if !p.exact && p.seen >= p.o.sampledPopulation() {
			p.scanning = false
		}
	}
	if !p.exact && p.target < 0 && (p.o.sampled.n >= p.plan.pilot || !p.scanning) {
		p.target = sampleTarget(p.o, p.plan)
	}
	return p
}

// meanKeySize is the mean size of the keys read outside the certain
// stratum, which picks the next certain stratum: exact (the sum over the
// count) after an exact pass, the running mean after a sampled one.
func (p pass) meanKeySize() float64 {
	if p.exact && p.o.sampled.n > 0 {
		return float64(p.o.sampled.sum) / float64(p.o.sampled.n)
	}
	return p.o.sampled.mean
}

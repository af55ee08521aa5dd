package proxy

// After each batch it writes, a shared backend connection may add a marker:
// a WAIT that the connection sends itself and whose reply no client sees.
// "WAIT 1 <ConfirmTimeout>" confirms every write sent before it (confirmed
// writes are answered only once it returns >= 1); "WAIT 0 0", a probe,
// confirms nothing and returns at once, but its reply tells what the
// replica has, which ends read-your-writes marks. Which marker, if any, is
// decided here from what the writer knows; bconn.writeLoop carries it out.

// markerKind is what the writer adds after a batch.
type markerKind uint8

const (
	// markNone: nothing follows the batch.
	markNone markerKind = iota
	// markDefer: a confirming WAIT is in flight; Redis runs nothing behind
	// it on this connection, so the batch waits for it anyway, and one WAIT
	// sent when it returns confirms everything that arrived meanwhile
	// (group commit). The writer records that one is owed (needWait).
	markDefer
	// markWait: WAIT 1 <ConfirmTimeout>, confirming every write so far.
	markWait
	// markProbe: WAIT 0 0, learning what the replica has.
	markProbe
)

func (k markerKind) String() string {
	switch k {
	case markNone:
		return "none"
	case markDefer:
		return "defer"
	case markWait:
		return "wait"
	case markProbe:
		return "probe"
	}
	return "markerKind(?)"
}

// markerState is what the marker choice depends on: the batch about to be
// written and the connection's state, as the writer reads them under the
// connection's lock.
type markerState struct {
	confirm  bool // the batch holds a write to confirm
	writes   bool // the batch holds a write
	wantWait bool // writes sent behind the last WAIT still await one
	waitOut  bool // a confirming WAIT is in flight
	probing  bool // a probe is in flight

	writeSeq  uint64 // sequence number of the connection's last write sent
	ackedSeq  uint64 // writes up to this one are known to be on the replica
	now       int64  // coarse clock, unix nanos
	lastProbe int64  // when the last probe was sent, unix nanos
}

// chooseMarker decides what follows a batch. Writes to confirm always get a
// WAIT, the one in flight's successor if there is one. Otherwise a probe
// rides along, at most every probeInterval, when the connection has writes
// the replica is not known to have (read-your-writes keeps their writers'
// reads on the master until then) and no WAIT of either kind is already
// out to tell.
func chooseMarker(s markerState) markerKind {
	switch {
	case (s.confirm || s.wantWait) && s.waitOut:
		return markDefer
	case s.confirm || s.wantWait:
		return markWait
	case !s.probing && !s.waitOut && (s.writes || s.ackedSeq < s.writeSeq) && s.now-s.lastProbe > int64(probeInterval):
		return markProbe
	}
	return markNone
}

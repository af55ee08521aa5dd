//go:build race

package proxy

// raceEnabled: built with -race. The raw socket reads and writes then go
// through package syscall, whose annotations tell the race detector that a
// write to a socket happens before the read of its reply.
const raceEnabled = true

package redistest

import (
	"testing"
	"time"
)

// WaitFor calls cond every 5 ms until it returns true, and fails the test
// (t.Fatalf, naming what) when it has not within d. cond runs on the
// test's goroutine, so it may call t.Fatal itself.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

//go:build !race

package proxy

// raceEnabled: built with -race (see race_on.go).
const raceEnabled = false

//go:build race

package replycheck

// raceEnabled: the race detector's instrumentation allocates, so tests
// that count allocations do not run under it.
const raceEnabled = true

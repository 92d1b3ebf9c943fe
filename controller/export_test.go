package controller

import "time"

// SetStallCheck shortens the consumer loop's stall check for a test and
// returns a function that restores it.
func SetStallCheck(first, max time.Duration) (restore func()) {
	oldFirst, oldMax := stallCheck, stallCheckMax
	stallCheck, stallCheckMax = first, max
	return func() { stallCheck, stallCheckMax = oldFirst, oldMax }
}

package controller

import (
	"slices"
	"time"
)

// SetStallCheck shortens the consumer loop's stall check for a test and
// returns a function that restores it.
func SetStallCheck(first, max time.Duration) (restore func()) {
	oldFirst, oldMax := stallCheck, stallCheckMax
	stallCheck, stallCheckMax = first, max
	return func() { stallCheck, stallCheckMax = oldFirst, oldMax }
}

// SetSweepMaxSubjects sets how many subjects of JOBS the expiry sweep lists
// before it walks the jobs instead, and returns a function that restores
// it.
func SetSweepMaxSubjects(n uint64) (restore func()) {
	old := sweepMaxSubjects
	sweepMaxSubjects = n
	return func() { sweepMaxSubjects = old }
}

// DurationBuckets are the job latency histogram's bucket bounds.
func DurationBuckets() []float64 { return slices.Clone(durationBuckets) }

// SetBacklogPeriod sets how often a controller tends the consumers of JOBS
// and returns a function that restores it.
func SetBacklogPeriod(d time.Duration) (restore func()) {
	old := backlogPeriod
	backlogPeriod = d
	return func() { backlogPeriod = old }
}

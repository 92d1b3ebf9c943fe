// Package procstats reads the few process figures that runners and
// controllers report about themselves (goroutines and heap), so that a
// soak or an operator can tell a leak from a busy moment. It uses
// runtime/metrics, which does not stop the world, so it is cheap enough to
// answer every stats request.
package procstats

import (
	"os"
	"runtime"
	"runtime/metrics"
)

// Snapshot is one reading of the process. All fields are process-wide.
type Snapshot struct {
	// PID is the process id.
	PID int `json:"pid"`
	// Goroutines is the number of goroutines now.
	Goroutines int `json:"goroutines"`
	// HeapBytes is the memory occupied by heap objects now, live or not
	// yet collected (runtime.MemStats.HeapAlloc).
	HeapBytes uint64 `json:"heap_bytes"`
	// HeapLiveBytes is the heap the last garbage collection found live:
	// the figure to compare over time, since it holds no garbage.
	HeapLiveBytes uint64 `json:"heap_live_bytes"`
	// GCCycles is the number of completed garbage collections.
	GCCycles uint64 `json:"gc_cycles"`
}

var names = []string{
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/gc/cycles/total:gc-cycles",
}

// Read returns a snapshot of the calling process. It is safe for
// concurrent use.
func Read() Snapshot {
	samples := make([]metrics.Sample, len(names))
	for i, n := range names {
		samples[i].Name = n
	}
	metrics.Read(samples)
	u := func(i int) uint64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0 // not supported by this Go version
		}
		return samples[i].Value.Uint64()
	}
	return Snapshot{
		PID:           os.Getpid(),
		Goroutines:    runtime.NumGoroutine(),
		HeapBytes:     u(0),
		HeapLiveBytes: u(1),
		GCCycles:      u(2),
	}
}

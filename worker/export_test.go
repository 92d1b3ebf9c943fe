package worker

import (
	"testing"
	"time"
)

// SetBacklogRetry shortens the pause after a failed jobs backlog read
// until the test ends; set it before starting a Worker.
func SetBacklogRetry(t testing.TB, d time.Duration) {
	old := backlogRetry
	backlogRetry = d
	t.Cleanup(func() { backlogRetry = old })
}

// RetireBusy drains a process that runs a request of algorithm right now
// and has more waiting,
// as the scaler drains an idle one: a request can reach a process between
// the look that found it idle and its drain, and this makes that happen on
// purpose. It reports whether such a process was found.
func RetireBusy(w *Worker, algorithm string) bool {
	p := w.pool.Load()
	if p == nil {
		return false
	}
	active, _ := p.snapshot()
	for _, s := range active {
		r := s.serving.Load()
		if r == nil {
			continue
		}
		for _, l := range r.Load() {
			if l.Algorithm == algorithm && l.InFlight > 0 && l.Waiting > 0 {
				p.retire(s)
				return true
			}
		}
	}
	return false
}

// Procs returns how many processes the worker has, draining ones included.
func Procs(w *Worker) int {
	p := w.pool.Load()
	if p == nil {
		return 0
	}
	_, all := p.snapshot()
	return all
}

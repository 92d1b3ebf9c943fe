package runner

// Load is what one algorithm of a Runner holds right now.
type Load struct {
	// Algorithm is the algorithm's name.
	Algorithm string
	// InFlight requests are running in the algorithm's function.
	InFlight int
	// Waiting requests were admitted and wait for a free slot.
	Waiting int
	// MaxConcurrency is how many may run at once (Spec.MaxConcurrency).
	MaxConcurrency int
	// Answered counts the requests answered so far, successes and errors.
	Answered int64
	// Refused counts the requests refused so far because MaxConcurrency
	// ran and MaxPending waited (503, not started).
	Refused int64
}

// Busy reports whether no slot is free: every one runs a request, or
// requests wait.
func (l Load) Busy() bool { return l.Waiting > 0 || l.InFlight >= l.MaxConcurrency }

// Load returns the load of each algorithm, once Started is closed (before,
// none). It reads the counters behind $SRV.STATS and costs a lock per
// algorithm; safe for concurrent use.
func (r *Runner) Load() []Load {
	r.mu.Lock()
	eps := r.endpoints
	r.mu.Unlock()
	out := make([]Load, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.load())
	}
	return out
}

// load reads the endpoint's gauges.
func (e *endpoint) load() Load {
	running := e.running.Load()
	e.mu.Lock()
	admitted := int64(e.admitted)
	e.mu.Unlock()
	return Load{
		Algorithm:      e.alg.spec.Name,
		InFlight:       int(running),
		Waiting:        int(max(0, admitted-running)),
		MaxConcurrency: e.alg.spec.MaxConcurrency,
		Answered:       e.svcStats.requests.Load(),
		Refused:        e.overloaded.Load(),
	}
}

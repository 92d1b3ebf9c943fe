package runner

import "github.com/pnpworker/pnpworker/protocol"

// HandBack answers up to n of the jobs that wait in the algorithm's queue
// (admitted, not started, carrying protocol.HeaderJobID) with a not-started
// 503, the newest first, and returns how many it answered. The controller
// takes such a refusal as back-pressure, not as an attempt, and hands the
// job out again a moment later, to whichever instance of the queue group
// takes it: a pool of instances moves waiting jobs from a busy instance to
// one with room this way. Requests without a job id keep their place (a
// client would see the 503 itself); what runs is not touched. It returns 0
// for an algorithm the runner does not serve, before Started and once the
// runner stops. Safe for concurrent use.
func (r *Runner) HandBack(algorithm string, n int) int {
	r.mu.Lock()
	eps := r.endpoints
	r.mu.Unlock()
	for _, e := range eps {
		if e.alg.spec.Name == algorithm {
			return e.handBack(n)
		}
	}
	return 0
}

// handBack takes the queue out of the channel, keeps back up to n jobs
// from its end, puts the rest back in order and answers the jobs kept
// back. A worker may take a request between two of the receives; it runs
// a little before the ones taken out, which is the only reordering.
func (e *endpoint) handBack(n int) int {
	if n <= 0 {
		return 0
	}
	e.mu.Lock()
	if e.closed || e.draining {
		e.mu.Unlock()
		return 0
	}
	var queued []job
take:
	for {
		select {
		case j := <-e.jobs:
			queued = append(queued, j)
		default:
			break take
		}
	}
	back := make([]bool, len(queued))
	count := 0
	for i := len(queued) - 1; i >= 0 && count < n; i-- {
		if queued[i].hdr.Get(protocol.HeaderJobID) != "" {
			back[i] = true
			count++
		}
	}
	var answer []job
	for i, j := range queued {
		if back[i] {
			answer = append(answer, j)
			continue
		}
		// Never blocks: the channel held them a moment ago, and only
		// handle, which needs e.mu, adds to it.
		e.jobs <- j
	}
	e.admitted -= count
	e.mu.Unlock()
	for _, j := range answer {
		e.replyError(j.reply, j.hdr, j.received, &Error{Code: CodeUnavailable, Message: "handed back before it started: another instance has room", NotStarted: true})
	}
	return count
}

package controller

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
)

// workFor is the channel that hands jobs of priority p to the workers.
func (c *Controller) workFor(p jobs.Priority) chan *job {
	switch p {
	case jobs.PriorityHigh:
		return c.workHigh
	case jobs.PriorityLow:
		return c.workLow
	}
	return c.work
}

// dispatchOrder gives, for each of ten turns, the order in which a worker
// looks at the priorities for a job ready now (0 high, 1 normal, 2 low):
// high first on seven turns, normal first on two, low first on one, each
// falling back to the others highest first. So while every priority has
// jobs waiting, of every ten jobs a worker takes 7 are high, 2 normal and
// 1 low (jobs.DispatchWeights), and none waits for ever behind a flood of
// higher ones.
var dispatchOrder = func() (o [10][3]int) {
	turn := 0
	for first, n := range jobs.DispatchWeights {
		for range n {
			o[turn][0] = first
			i := 1
			for p := range 3 {
				if p != first {
					o[turn][i] = p
					i++
				}
			}
			turn++
		}
	}
	return o
}()

// next returns the next job for a worker, waiting for one; turn is the
// worker's own count of dispatches (its place in dispatchOrder). It
// returns false once the queues are closed: every puller has returned,
// and as the queues are unbuffered, no job is left in them.
func (c *Controller) next(turn *int) (*job, bool) {
	queues := [3]chan *job{c.workHigh, c.work, c.workLow}
	order := &dispatchOrder[*turn]
	*turn = (*turn + 1) % len(dispatchOrder)
	for _, q := range order {
		select {
		case j, ok := <-queues[q]:
			if !ok {
				return nil, false
			}
			return j, true
		default:
		}
	}
	// Nothing ready: take whatever comes first.
	select {
	case j, ok := <-c.workHigh:
		return j, ok
	case j, ok := <-c.work:
		return j, ok
	case j, ok := <-c.workLow:
		return j, ok
	}
}

// pullAll consumes algorithm alg's jobs until ctx ends: those of
// priority normal at once, those of priority high and low from when the
// priority watch has seen one (a consumer each, made only for algorithms
// that get such jobs).
func (c *Controller) pullAll(ctx context.Context, alg string) {
	var wg sync.WaitGroup
	for _, p := range jobs.Priorities {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p != jobs.PriorityNormal && !c.prio.await(ctx, jobs.JobSubject(alg, p)) {
				return
			}
			c.pull(ctx, alg, p)
		}()
	}
	wg.Wait()
}

// priorityPoll is how often the priority watch looks for subjects of
// high and low jobs that no puller takes yet: the longest a first job of
// priority high or low of an algorithm waits for its consumer.
const priorityPoll = time.Second

// priorityWatch remembers the subjects of JOBS on which jobs of priority
// high or low were seen, so that their pullers start when the first one
// comes, and only then. It is safe for concurrent use.
type priorityWatch struct {
	mu      sync.Mutex
	seen    map[string]bool
	changed chan struct{} // closed and replaced when seen grows
}

func newPriorityWatch() *priorityWatch {
	return &priorityWatch{seen: map[string]bool{}, changed: make(chan struct{})}
}

// await waits until a job was seen on subject, and reports false when ctx
// ends first.
func (pw *priorityWatch) await(ctx context.Context, subject string) bool {
	for {
		pw.mu.Lock()
		seen, changed := pw.seen[subject], pw.changed
		pw.mu.Unlock()
		if seen {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// add marks subjects as seen.
func (pw *priorityWatch) add(subjects []string) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	grew := false
	for _, s := range subjects {
		if !pw.seen[s] {
			pw.seen[s], grew = true, true
		}
	}
	if grew {
		close(pw.changed)
		pw.changed = make(chan struct{})
	}
}

// watchPriorities reads, every priorityPoll until ctx ends, which
// subjects of high and low jobs hold jobs: one stream info request for
// all algorithms. Jobs that were delivered and not acked stay in the
// stream, so a controller that restarts finds them too.
func (c *Controller) watchPriorities(ctx context.Context) {
	t := time.NewTicker(priorityPoll)
	defer t.Stop()
	var subjects []string
	for {
		ictx, cancel := context.WithTimeout(ctx, priorityPoll)
		info, err := c.store.Jobs().Info(ictx, jetstream.WithSubjectFilter(JobsSubjectPrefix+"*.*"))
		cancel()
		if err == nil {
			subjects = subjects[:0]
			for subj := range info.State.Subjects {
				subjects = append(subjects, subj)
			}
			c.prio.add(subjects)
		} else if ctx.Err() == nil {
			c.log.Debug().Err(err).Msg("priority watch: cannot read the subjects of JOBS")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

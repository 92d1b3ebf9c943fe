package controller

import (
	"context"
	"maps"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
)

// A job's first delivery is retired without running when a cancel stored
// its cancelled record first (jobs.Store.Cancel). Reading the record of
// every job before dispatch would cost a JetStream round trip per job,
// though cancels are rare; so the controller watches the cancel marks
// (jobs.CancelMarkKey: per algorithm, when its latest cancel happened,
// written before the cancelled record) and reads the record only of jobs
// stored before their algorithm's latest cancel. A cancel whose mark has
// not reached the watch yet races the job's dispatch: the runner, told of
// the cancel too, stops the job or refuses it, and the job's own outcome
// can never replace the cancelled record.

// cancelSkew is how much later than the latest cancel of its algorithm a
// job may have been stored and still be checked: JOBS and the served
// bucket may be led by different servers, whose clocks differ.
const cancelSkew = 10 * time.Second

// cancelDistrust is how long after a reconnect every job is checked: the
// watch may miss marks until its consumer is recreated.
const cancelDistrust = 30 * time.Second

// cancelWatch is the controller's view of the cancel marks, read by every
// job without a lock: the marks change rarely and are replaced whole. The
// zero value is not ready: every job is checked.
type cancelWatch struct {
	// marks is nil while the watch is not ready, else each algorithm's
	// latest cancel as the server stored it.
	marks atomic.Pointer[map[string]time.Time]
	// until is when a reconnect stops counting, in Unix nanoseconds.
	until atomic.Int64
}

// mayBeCancelled reports whether the job of alg stored at stored may have
// a cancelled record: the watch is not ready, a reconnect happened
// recently, or the job is older than the algorithm's latest cancel.
func (w *cancelWatch) mayBeCancelled(alg string, stored time.Time) bool {
	m := w.marks.Load()
	if m == nil || time.Now().UnixNano() < w.until.Load() {
		return true
	}
	at, ok := (*m)[alg]
	return ok && stored.Before(at.Add(cancelSkew))
}

// distrust makes every job checked for cancelDistrust from now.
func (w *cancelWatch) distrust() {
	w.until.Store(time.Now().Add(cancelDistrust).UnixNano())
}

// run watches the cancel marks of served until ctx ends. Without the
// bucket, or when the watch cannot start (a user that may not watch it),
// it stays not ready and every job is checked.
func (w *cancelWatch) run(ctx context.Context, c *Controller) {
	if c.store.Served() == nil {
		return
	}
	kw, err := c.store.Served().Watch(ctx, "*"+jobs.CancelMarkSuffix, jetstream.IgnoreDeletes())
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("cannot watch the cancel marks; reading the record of every job before it runs")
		}
		return
	}
	defer func() { _ = kw.Stop() }()
	defer w.marks.Store(nil)
	// Marks read before the initial values are complete wait in marks.
	marks, ready := map[string]time.Time{}, false
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-kw.Updates():
			if !ok {
				return
			}
			if e == nil {
				ready = true
			} else if alg, ok := strings.CutSuffix(e.Key(), jobs.CancelMarkSuffix); ok && e.Created().After(marks[alg]) {
				marks = maps.Clone(marks)
				marks[alg] = e.Created()
			} else {
				continue
			}
			if ready {
				// A variable of its own: marks is reassigned by the next
				// change, and the map it holds now is never written again.
				snapshot := marks
				w.marks.Store(&snapshot)
			}
		}
	}
}

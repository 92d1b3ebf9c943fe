package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// A runner reports the progress of a job it runs on progress.<algorithm>
// (protocol.ProgressSubject, runner.Progress). Every controller
// subscribes progress.* once; the one whose request to the runner is in
// flight for the job stores the report in the job's record, with status
// running, compare-and-set, so that a final record is never replaced.
// A job that never reports progress costs a map entry while its request
// is in flight, nothing more: no record write, no subscription.

// ProgressWriteInterval is the shortest time between two running records
// the controller writes for one job: reports in between are folded, the
// latest wins and is written when the interval is over (unless the
// attempt ended by then).
const ProgressWriteInterval = time.Second

// progressWriteTimeout bounds one running record's write.
const progressWriteTimeout = 10 * time.Second

// progressTable holds the jobs whose request is in flight, by job id.
type progressTable struct {
	mu   sync.Mutex
	jobs map[string]*task
}

// begin makes t's job take progress reports until end.
func (pt *progressTable) begin(t *task) {
	pt.mu.Lock()
	if pt.jobs == nil {
		pt.jobs = map[string]*task{}
	}
	pt.jobs[t.id] = t
	pt.mu.Unlock()
}

// end stops t's job from taking progress reports; a report folded but not
// written yet is dropped: the attempt's outcome follows.
func (pt *progressTable) end(t *task) {
	pt.mu.Lock()
	if pt.jobs[t.id] == t {
		delete(pt.jobs, t.id)
	}
	pj := t.progress
	pt.mu.Unlock()
	if pj != nil {
		pj.mu.Lock()
		pj.ended = true
		if pj.timer != nil {
			pj.timer.Stop()
			pj.timer = nil
		}
		pj.mu.Unlock()
	}
}

// progressJob is the progress state of one attempt of a job that reported
// progress.
type progressJob struct {
	c   *Controller
	ctx context.Context
	rec Result // the attempt's record, as the running record starts

	mu        sync.Mutex
	latest    jobs.Progress
	instance  string
	have      bool // latest is not written yet
	writing   bool
	ended     bool
	lastWrite time.Time
	timer     *time.Timer
}

// subscribeProgress subscribes the progress subjects of every algorithm.
func (c *Controller) subscribeProgress(ctx context.Context) (*nats.Subscription, error) {
	subj := protocol.ProgressSubjectPrefix + "*"
	sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) { c.onProgress(ctx, m) })
	if err != nil {
		return nil, fmt.Errorf("controller: subscribe %s: %w", subj, err)
	}
	return sub, nil
}

// onProgress takes one report: for a job this controller has in flight,
// of the algorithm the subject names, it is written now or folded.
// Anything else is dropped.
func (c *Controller) onProgress(ctx context.Context, m *nats.Msg) {
	alg, ok := protocol.ProgressAlgorithm(m.Subject)
	if !ok {
		return
	}
	p, err := protocol.DecodeProgress(m.Data)
	if err != nil {
		c.log.Debug().Err(err).Str("algorithm", alg).Msg("progress report dropped")
		return
	}
	now := time.Now().UTC()
	c.progress.mu.Lock()
	t := c.progress.jobs[p.JobID]
	if t == nil || t.alg != alg {
		// Not a job of ours, or a report on another algorithm's subject:
		// a runner may publish only under its own algorithms (nats.conf),
		// so it cannot report for another team's jobs.
		c.progress.mu.Unlock()
		return
	}
	pj := t.progress
	if pj == nil {
		// t.rec does not change while the request is in flight, and end
		// takes this lock before the request's outcome is handled.
		pj = &progressJob{c: c, ctx: ctx, rec: t.rec}
		t.progress = pj
	}
	c.progress.mu.Unlock()

	pj.mu.Lock()
	defer pj.mu.Unlock()
	if pj.ended {
		return
	}
	pj.latest, pj.instance, pj.have = jobs.Progress{Fraction: p.Fraction, Message: p.Message, UpdatedAt: now}, p.Instance, true
	pj.schedule()
}

// schedule starts a write now or when the interval is over; pj.mu held.
func (pj *progressJob) schedule() {
	if pj.writing || pj.timer != nil || !pj.have || pj.ended {
		return
	}
	if wait := ProgressWriteInterval - time.Since(pj.lastWrite); wait > 0 {
		pj.timer = time.AfterFunc(wait, pj.kick)
		return
	}
	pj.writing = true
	go pj.write()
}

func (pj *progressJob) kick() {
	pj.mu.Lock()
	defer pj.mu.Unlock()
	pj.timer = nil
	pj.schedule()
}

// write stores the latest report as the job's running record.
func (pj *progressJob) write() {
	pj.mu.Lock()
	rec := pj.rec
	p := pj.latest
	rec.Status, rec.Progress, rec.Instance = StatusRunning, &p, pj.instance
	pj.have = false
	pj.mu.Unlock()

	ctx, cancel := context.WithTimeout(pj.ctx, progressWriteTimeout)
	err := pj.store(ctx, &rec)
	cancel()
	if err != nil && !errors.Is(err, errFinal) {
		pj.c.log.Debug().Err(err).Str("job_id", rec.JobID).Msg("progress not stored")
	}

	pj.mu.Lock()
	defer pj.mu.Unlock()
	pj.writing, pj.lastWrite = false, time.Now()
	pj.schedule()
}

// store writes rec compare-and-set where the job has no record, a running
// one, or the retrying record of an earlier attempt; never over a final
// record, nor over the retrying record of this attempt or a later one
// (the attempt ended while the write was on its way).
func (pj *progressJob) store(ctx context.Context, rec *Result) error {
	data, err := appendJSON(nil, rec)
	if err != nil {
		return err
	}
	kv := pj.c.store.Results()
	for range 5 {
		pj.mu.Lock()
		ended := pj.ended
		pj.mu.Unlock()
		if ended {
			return nil
		}
		e, err := kv.Get(ctx, rec.JobID)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err = kv.Create(ctx, rec.JobID, data)
		case err != nil:
			return err
		default:
			prev, derr := jobs.DecodeResult(rec.JobID, e.Value())
			switch {
			case derr != nil:
				return derr // not a record of ours: leave it to the outcome
			case prev.Status.Final():
				return errFinal
			case prev.Status == StatusRetrying && prev.Attempts >= rec.Attempts:
				return nil
			}
			_, err = kv.Update(ctx, rec.JobID, data, e.Revision())
		}
		if err == nil || (!errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch)) {
			return err
		}
	}
	return errors.New("the record kept changing")
}

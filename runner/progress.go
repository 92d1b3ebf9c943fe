package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
)

// ProgressInterval is the shortest time between two progress messages an
// instance publishes for one job: Progress calls in between are folded,
// the latest wins and is published when the interval is over.
const ProgressInterval = 250 * time.Millisecond

// jobRef is what a request's context carries of its job: the id, and the
// state of its progress reports. It costs nothing until Progress is
// called.
type jobRef struct {
	id  string
	e   *endpoint       // nil where progress cannot be reported (a batch)
	ctx context.Context // the request's; progress stops when it ends

	mu      sync.Mutex
	last    time.Time          // when the latest progress was published
	pending *protocol.Progress // folded, to publish at last+ProgressInterval
}

// Progress reports how far the job of ctx got: fraction from 0 to 1 and
// a short message for people (at most protocol.MaxProgressMessage bytes of
// printable UTF-8, no control characters; "" for none). The job's record
// then has status running and shows it; pnp result, pnp jobs ls, the
// HTTP API's job events and the dashboard show it too.
//
// It does not wait for the network. At most one report per
// ProgressInterval is published for a job; calls in between replace each
// other, and the latest is published when the interval is over, unless
// the job has ended by then (its final record says more). Reports are
// best effort: one lost on the way is not retried.
//
// Errors: a fraction that is NaN or outside 0..1, or a message that is too
// long or not printable, is refused with an error naming it. Called with
// a context that is not a job's request (a plain request without the
// Pnp-Job-Id header, a batch function, a context of the caller's own), or
// after the request ended, Progress does nothing and returns nil: an
// algorithm can report progress whoever calls it.
// Safe for concurrent use.
func Progress(ctx context.Context, fraction float64, message string) error {
	if err := protocol.CheckProgressFraction(fraction); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	if err := protocol.CheckProgressMessage(message); err != nil {
		return fmt.Errorf("runner: %w", err)
	}
	ref, _ := ctx.Value(jobIDKey{}).(*jobRef)
	if ref == nil || ref.e == nil || ref.ctx.Err() != nil || !protocol.ValidJobID(ref.id) {
		return nil
	}
	ref.report(protocol.Progress{JobID: ref.id, Fraction: fraction, Message: message, Instance: ref.e.instance})
	return nil
}

// report publishes p now, or folds it until the interval is over.
func (r *jobRef) report(p protocol.Progress) {
	r.mu.Lock()
	now := time.Now()
	if wait := ProgressInterval - now.Sub(r.last); wait > 0 {
		first := r.pending == nil
		r.pending = &p
		r.mu.Unlock()
		if first {
			time.AfterFunc(wait, r.flush)
		}
		return
	}
	r.last = now
	r.mu.Unlock()
	r.publish(p)
}

// flush publishes the folded report, if the request still runs.
func (r *jobRef) flush() {
	r.mu.Lock()
	p := r.pending
	r.pending = nil
	r.last = time.Now()
	r.mu.Unlock()
	if p != nil && r.ctx.Err() == nil {
		r.publish(*p)
	}
}

func (r *jobRef) publish(p protocol.Progress) {
	data, err := json.Marshal(p)
	if err == nil {
		err = r.e.nc.Publish(protocol.ProgressSubject(r.e.alg.spec.Name), data)
	}
	if err != nil {
		r.e.log.Debug().Err(err).Str("job_id", r.id).Msg("progress not published")
	}
}

// withoutProgress returns ctx with its job id kept and its progress off:
// a batch's context is its first item's, whose progress it does not tell.
func withoutProgress(ctx context.Context) context.Context {
	ref, _ := ctx.Value(jobIDKey{}).(*jobRef)
	if ref == nil {
		return ctx
	}
	return context.WithValue(ctx, jobIDKey{}, &jobRef{id: ref.id})
}

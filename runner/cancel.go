package runner

import (
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// Cancelling a job (jobs.Store.Cancel) stores its cancelled record, then
// publishes the job id on cancel.<algorithm>, which every instance of the
// algorithm subscribes. The instance running the job cancels the
// request's context and answers it at once; since the request may still
// be on its way, the instance remembers the id for cancelMemory and
// refuses the request unrun when it comes.

// cancelMemory is how long an instance remembers a cancelled job id.
const cancelMemory = 2 * time.Minute

// maxCancelled bounds the ids remembered; past it the oldest go first.
const maxCancelled = 10_000

// cancelled remembers recently cancelled job ids.
type cancelled struct {
	mu    sync.Mutex
	at    map[string]time.Time
	order []string // oldest first
}

func (c *cancelled) add(id string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at == nil {
		c.at = map[string]time.Time{}
	}
	for len(c.order) > 0 && (len(c.order) >= maxCancelled || now.Sub(c.at[c.order[0]]) > cancelMemory) {
		delete(c.at, c.order[0])
		c.order = c.order[1:]
	}
	if _, ok := c.at[id]; !ok {
		c.order = append(c.order, id)
	}
	c.at[id] = now
}

func (c *cancelled) has(id string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.at[id]
	return ok && now.Sub(at) <= cancelMemory
}

// cancelError is the answer to a cancelled request.
func cancelError(id string) *Error {
	return &Error{Code: CodeUnavailable, Message: fmt.Sprintf("cancelled: job %s was cancelled", id)}
}

// subscribeCancel subscribes the algorithm's cancel subject.
func (e *endpoint) subscribeCancel() error {
	subj := protocol.CancelSubject(e.alg.spec.Name)
	sub, err := e.nc.Subscribe(subj, func(m *nats.Msg) {
		if _, ok := protocol.JetStreamDelivered(m); ok {
			return
		}
		if id := string(m.Data); protocol.ValidJobID(id) {
			e.cancelJob(id)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subj, err)
	}
	e.monitorSubs = append(e.monitorSubs, sub)
	return nil
}

// cancelJob remembers id and stops the request of job id where it runs.
func (e *endpoint) cancelJob(id string) {
	e.cancels.add(id, time.Now())
	e.mu.Lock()
	workers := e.workerList[:len(e.workerList):len(e.workerList)]
	e.mu.Unlock()
	for _, w := range workers {
		w.cancelIf(id)
	}
}

// cancelIf answers the running request and cancels its context when it
// is job id's and not answered yet.
func (w *worker) cancelIf(id string) {
	w.mu.Lock()
	if !w.active || w.replied || w.hdr.Get(protocol.HeaderJobID) != id {
		w.mu.Unlock()
		return
	}
	w.replied = true
	reply, hdr, received, cancel := w.reply, w.hdr, w.received, w.cancel
	w.mu.Unlock()
	cancel()
	w.e.log.Info().Str("job_id", id).Msg("job cancelled while running")
	w.e.replyError(reply, hdr, received, cancelError(id))
}

package worker

import (
	"context"
	"errors"
	"os"
	"runtime"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
)

// writeQueue holds the lines for a process's stdin that are not written
// yet. Whoever queues a line while no write is under way writes, after
// letting the requests that became ready at the same time queue theirs:
// one write, and one read for the worker, for all of them. The others
// return at once and wait for their answers.
type writeQueue struct {
	buf      []byte    // the lines
	ids      []string  // the requests whose lines are in buf
	deadline time.Time // the latest deadline of the lines in buf
	forever  bool      // a line in buf has no deadline
	writing  bool      // a write is under way
	spare    []byte    // the buffer last written, for reuse
	spareIDs []string
}

// add records a line appended to q.buf (after appending line, if any) for
// request id ("" for other messages), written within ctx's deadline.
func (q *writeQueue) add(ctx context.Context, line []byte, id string) {
	q.buf = append(q.buf, line...)
	if id != "" {
		q.ids = append(q.ids, id)
	}
	if d, ok := ctx.Deadline(); !ok {
		q.forever = true
	} else if d.After(q.deadline) {
		q.deadline = d
	}
}

// writeQueued writes what is queued unless another goroutine does already;
// s.wmu is held on entry and released on return. The caller writes the
// lines it finds, its own among them, and no more: lines queued during
// that write are written on by another goroutine, so that the caller goes
// back to wait for its answer (which may be there already) rather than
// write for the others for as long as they keep coming or the worker is
// slow to read them.
func (s *session) writeQueued() {
	q := &s.wq
	if q.writing {
		s.wmu.Unlock()
		return
	}
	q.writing = true
	s.wmu.Unlock()
	// The requests that were answered together become ready together:
	// their lines join this one's write.
	runtime.Gosched()
	s.wmu.Lock()
	s.writeBatch()
	if len(q.buf) > 0 {
		s.wmu.Unlock()
		go s.writeRest()
		return
	}
	q.writing = false
	s.wmu.Unlock()
}

// writeRest writes the queued lines until none are left, then lets the
// next caller write.
func (s *session) writeRest() {
	s.wmu.Lock()
	for len(s.wq.buf) > 0 {
		s.writeBatch()
	}
	s.wq.writing = false
	s.wmu.Unlock()
}

// writeBatch writes the lines queued now in one write; s.wmu is held on
// entry and on return, and released during the write.
func (s *session) writeBatch() {
	q := &s.wq
	buf, ids, deadline := q.buf, q.ids, q.deadline
	if q.forever {
		deadline = time.Time{}
	}
	// The kept buffer now takes the next lines: it is kept no more, or a
	// write too large to keep its own would leave it kept and in use, and
	// the next write would fill the buffer it writes from.
	q.buf, q.ids, q.deadline, q.forever = q.spare[:0], q.spareIDs[:0], time.Time{}, false
	q.spare, q.spareIDs = nil, nil
	s.wmu.Unlock()
	// The deadline is the latest of the lines': the write is needed
	// until then. A caller whose deadline comes first is answered by its
	// own deadline meanwhile.
	_ = s.stdin.SetWriteDeadline(deadline)
	_, err := s.stdin.Write(buf)
	if err != nil {
		s.writeFailed(ids, err)
	}
	s.wmu.Lock()
	if cap(buf) <= maxKeptBuffer {
		q.spare, q.spareIDs = buf[:0], ids[:0]
	}
}

// maxKeptBuffer is the largest write buffer kept for the next lines.
const maxKeptBuffer = 64 << 10

// writeFailed answers the requests whose lines a failed write held.
func (s *session) writeFailed(ids []string, err error) {
	calls := make([]*call, 0, len(ids))
	for _, id := range ids {
		if c := s.take(id); c != nil {
			calls = append(calls, c)
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The process did not read its input until the last of these
		// requests' deadlines, and a line may be half written: it must
		// go. Their budgets are spent: each is answered 504 by its own
		// deadline like any request whose deadline passed (never the
		// 503 of a process that died), which keeps the reply the same
		// whether the runner's deadline timer or the call's return
		// comes first.
		s.kill("stopped reading its stdin")
		return
	}
	s.lg().Debug().Err(err).Int("requests", len(calls)).Msg("writing to the worker's stdin")
	for _, c := range calls {
		c.ch <- result{err: &protocol.Error{Code: protocol.CodeUnavailable, Message: "worker process is not taking requests", NotStarted: true, Err: err}}
	}
}

package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"
)

// The buffer being filled is never the one kept for reuse: after a write
// too large to keep, the next lines must not go into the array that the
// write after them reuses, or lines queued during that write overwrite
// the bytes it writes (another request's bytes in a line).
func TestWriteBufferNotQueuedAndSpareAtOnce(t *testing.T) {
	s, r := pipeSession(t)
	go func() { _, _ = io.Copy(io.Discard, r) }()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	line := func(id string, n int) *request {
		return &request{Type: TypeRequest, ID: id, Algorithm: "a", Input: json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), n)) + `"`)}
	}
	q := &s.wq
	s.wmu.Lock()
	q.writing = true // this test writes: sendRequest only queues
	s.wmu.Unlock()
	for i, n := range []int{10, 10, maxKeptBuffer + 1, 10, 10} {
		s.sendRequest(ctx, line(string(rune('a'+i)), n))
		s.wmu.Lock()
		s.writeBatch()
		if cap(q.buf) > 0 && cap(q.spare) > 0 && &q.buf[:1][0] == &q.spare[:1][0] {
			s.wmu.Unlock()
			t.Fatalf("after write %d (%d bytes of input): the queue fills the buffer kept to be reused", i+1, n)
		}
		s.wmu.Unlock()
	}
}

package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/protocol"
)

func pipeSession(t *testing.T) (*session, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	log := zerolog.Nop()
	s := &session{stdin: w, pending: map[string]*call{}}
	s.logp.Store(&log)
	s.basep.Store(&log)
	return s, r
}

// Lines queued while a write is under way wait for it, and the next
// write takes all of them: the worker reads them at once.
func TestQueuedLinesAreWrittenTogether(t *testing.T) {
	s, r := pipeSession(t)
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	s.wq.writing = true // another caller writes
	for _, id := range []string{"1", "2", "3"} {
		s.sendRequest(ctx, &request{Type: TypeRequest, ID: id, Algorithm: "a", Input: json.RawMessage(`{"n":` + id + `}`), TimeoutMS: 5})
		_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("after request %s: read %d bytes (%v), want nothing written while another write is under way", id, n, err)
		}
	}
	if err := s.send(ctx, cancel{Type: TypeCancel, ID: "1"}); err != nil {
		t.Fatal(err)
	}
	// The write under way ends; the writer finds the queued lines.
	s.wmu.Lock()
	s.wq.writing = false
	s.writeQueued()
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := r.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(buf[:n], []byte("\n")), []byte("\n"))
	if len(lines) != 4 {
		t.Fatalf("one read got %d lines, want the 3 requests and the cancel:\n%s", len(lines), buf[:n])
	}
	for i, want := range []string{`"id":"1"`, `"id":"2"`, `"id":"3"`, `{"type":"cancel","id":"1"}`} {
		if !bytes.Contains(lines[i], []byte(want)) {
			t.Fatalf("line %d %s: want %s, in the order queued", i, lines[i], want)
		}
	}
	if s.wq.writing || len(s.wq.buf) != 0 || len(s.wq.ids) != 0 {
		t.Fatalf("after the write: writing %v, %d bytes and %d ids queued", s.wq.writing, len(s.wq.buf), len(s.wq.ids))
	}
}

// A write that fails because the process no longer reads (its end of the
// pipe closed) answers every request whose line it held 503, not started.
func TestFailedWriteAnswersItsRequests(t *testing.T) {
	s, r := pipeSession(t)
	r.Close()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	calls := map[string]*call{"1": {ch: make(chan result, 1)}, "2": {ch: make(chan result, 1)}}
	for id, c := range calls {
		s.pending[id] = c
	}
	s.wq.writing = true
	s.sendRequest(ctx, &request{Type: TypeRequest, ID: "1", Algorithm: "a", Input: json.RawMessage(`{}`)})
	s.sendRequest(ctx, &request{Type: TypeRequest, ID: "2", Algorithm: "a", Input: json.RawMessage(`{}`)})
	s.wmu.Lock()
	s.wq.writing = false
	s.writeQueued()
	for id, c := range calls {
		select {
		case res := <-c.ch:
			var pe *protocol.Error
			if !errors.As(res.err, &pe) || pe.Code != protocol.CodeUnavailable || !pe.NotStarted {
				t.Fatalf("request %s: %v, want 503 not started", id, res.err)
			}
		default:
			t.Fatalf("request %s not answered", id)
		}
	}
	if len(s.pending) != 0 {
		t.Fatalf("%d requests still pending", len(s.pending))
	}
}

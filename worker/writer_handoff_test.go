package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"
)

// The caller that writes returns once the lines it found are written: the
// lines others queued meanwhile are written on without it. Otherwise,
// while the worker reads slowly or the others keep queueing, it writes
// for them and its own answer, there already, waits (past its deadline).
func TestWriterReturnsAfterItsOwnWrite(t *testing.T) {
	s, r := pipeSession(t)
	ctx, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	big := func(n int) json.RawMessage { return json.RawMessage(`"` + string(bytes.Repeat([]byte("x"), n)) + `"`) }
	// X's line is more than the pipe holds: its write waits for a reader.
	xDone := make(chan struct{})
	go func() {
		defer close(xDone)
		s.sendRequest(ctx, &request{Type: TypeRequest, ID: "x", Algorithm: "a", Input: big(200 << 10)})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.wmu.Lock()
		writing, queued := s.wq.writing, len(s.wq.buf)
		s.wmu.Unlock()
		if writing && queued == 0 {
			break // X's line left the queue: its write is under way
		}
		if time.Now().After(deadline) {
			t.Fatal("X's write never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Y queues meanwhile, and returns at once.
	s.sendRequest(ctx, &request{Type: TypeRequest, ID: "y", Algorithm: "a", Input: big(200 << 10)})
	// The worker reads X's line only, then nothing for a while.
	br := bufio.NewReader(r)
	line, err := br.ReadBytes('\n')
	if err != nil || !bytes.Contains(line, []byte(`"id":"x"`)) {
		t.Fatalf("first line: %v %.60s", err, line)
	}
	select {
	case <-xDone:
	case <-time.After(10 * time.Second):
		t.Fatal("X's caller is still writing Y's line: it cannot take its own answer")
	}
	// Y's line is written all the same once the worker reads on.
	got := make(chan []byte, 1)
	go func() {
		l, _ := br.ReadBytes('\n')
		got <- l
		_, _ = io.Copy(io.Discard, br)
	}()
	select {
	case l := <-got:
		if !bytes.Contains(l, []byte(`"id":"y"`)) || len(l) < 200<<10 {
			t.Fatalf("second line: %d bytes, %.60s", len(l), l)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Y's line was never written")
	}
}

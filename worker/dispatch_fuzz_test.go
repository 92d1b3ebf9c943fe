package worker

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/rs/zerolog"
)

// Whatever a worker writes on stdout, reading it never panics, and a
// pending request is answered at most once.
func FuzzStdout(f *testing.F) {
	for _, seed := range []string{
		`{"type":"result","id":"1","output":{"a":1}}`,
		`{"type":"result","id":"2","results":[{"output":1},{"error":{"code":422,"message":"x"}}]}`,
		`{"type":"error","id":"1","code":999,"message":"x","detail":"tb"}`,
		`{"type":"log","level":"warn","message":"m","algorithm":"a","id":"1"}`,
		`{"type":"hello","protocol":1,"algorithms":[{"name":"a","version":"1.0.0"}]}`,
		`{"type":"result","id":"1","output": not json`,
		"garbage\n\n\r\n{\"id\":\"2\"",
		`{"type":"result","id":"1"}`,
		`[1,2,3]`, `null`, `"str"`, `{"type":42}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		log := zerolog.Nop()
		s := &session{pending: map[string]*call{}, hello: make(chan inbound, 1)}
		s.logp.Store(&log)
		s.basep.Store(&log)
		s.w = &Worker{cfg: Config{MaxLine: 256, MaxLogLine: 64}}
		s.logs = newLogBudget(100, 10, func(int) {})
		calls := map[string]*call{
			"1": {algorithm: "a", ch: make(chan result, 1)},
			"2": {algorithm: "b", batch: 2, ch: make(chan result, 1)},
		}
		for id, c := range calls {
			s.pending[id] = c
		}
		s.readStdout(bytes.NewReader(out))
		for id, c := range calls {
			select {
			case r := <-c.ch:
				if r.err == nil && c.batch == 0 && !json.Valid(r.output) {
					t.Fatalf("request %s answered with invalid output %q", id, r.output)
				}
				if r.err == nil && c.batch > 0 && len(r.outputs) != c.batch {
					t.Fatalf("batch %s answered with %d results", id, len(r.outputs))
				}
			default:
			}
			if len(c.ch) != 0 {
				t.Fatalf("request %s answered twice", id)
			}
		}
	})
}

func TestReadLineLimits(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 100)
	in := append(append(append([]byte("short\n"), long...), '\n'), "last"...)
	br := bufio.NewReaderSize(bytes.NewReader(in), 16)
	for _, want := range []struct {
		line    string
		tooLong bool
	}{{"short\n", false}, {string(long[:50]), true}, {"last", false}} {
		line, tooLong, _ := readLine(br, 50, 4096)
		if tooLong != want.tooLong || (!tooLong && string(line) != want.line) || (tooLong && len(line) > 4096) {
			t.Fatalf("readLine = %q %v, want %q %v", line, tooLong, want.line, want.tooLong)
		}
	}
}

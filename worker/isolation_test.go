package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/worker"
)

// A hello that declares more than the runner sets aside for one process is
// refused with a log entry naming the field, and the process is restarted
// with backoff; nothing is allocated for it. Before, max_concurrency
// 1000000000 made the runner allocate a 72 GB queue and the whole process
// (pnp up with its NATS server) died; 200000 cost 632 MB.
func TestHelloBeyondBoundsIsRefused(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	alg := func(name, extra string) string {
		return `{"name":"` + name + `","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}` + extra + `}`
	}
	many := make([]string, worker.MaxAlgorithms+1)
	for i := range many {
		many[i] = alg(fmt.Sprintf("a%d", i), "")
	}
	cases := []struct {
		name, algorithms, want string
	}{
		{"max_concurrency 1e9", alg("huge", `,"max_concurrency":1000000000`), "max_concurrency 1000000000: want 1 to 4096"},
		{"max_concurrency 200000", alg("huge", `,"max_concurrency":200000`), "max_concurrency 200000: want 1 to 4096"},
		{"max_concurrency beyond int", alg("huge", `,"max_concurrency":1e20`), "max_concurrency"},
		{"negative max_concurrency", alg("huge", `,"max_concurrency":-1`), "max_concurrency -1"},
		{"batch max_size 1e9", alg("huge", `,"batch":{"max_size":1000000000}`), "batch: max_size 1000000000"},
		{"batch max_wait_ms", alg("huge", `,"batch":{"max_size":8,"max_wait_ms":1e300}`), "max_wait_ms 0 to 60000"},
		{"timeout_ms that wraps", alg("huge", `,"timeout_ms":9223372036854775807`), "timeout_ms 9223372036854775807"},
		{"too many algorithms", strings.Join(many, ","), fmt.Sprintf("%d algorithms, at most %d", worker.MaxAlgorithms+1, worker.MaxAlgorithms)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			script := filepath.Join(t.TempDir(), "hello.sh")
			writeFile(t, script, 0o755, "#!/bin/sh\necho '{\"type\":\"hello\",\"protocol\":1,\"algorithms\":["+tc.algorithms+"]}'\nexec sleep 60\n")
			logs := startWorker(t, nc, worker.Config{Command: []string{script}, MaxBackoff: 50 * time.Millisecond})
			natstest.Eventually(t, 20*time.Second, func() bool {
				for _, l := range logs.lines(map[string]string{"message": "worker hello refused"}) {
					if strings.Contains(fmt.Sprint(l["error"]), tc.want) {
						return true
					}
				}
				return false
			}, "no %q in a refused hello's log entry", tc.want)
			// Refused again at each restart: it never serves.
			natstest.Eventually(t, 20*time.Second, func() bool {
				return len(logs.lines(map[string]string{"message": "worker hello refused"})) >= 2
			}, "the refused worker is not restarted")
			if n := len(logs.lines(map[string]string{"message": "worker serving"})); n != 0 {
				t.Fatalf("a hello beyond the bounds was served (%d times)", n)
			}
		})
	}
}

// The bounds themselves are accepted: a worker may declare the largest
// max_concurrency and batch size, and is served.
func TestHelloAtBoundsIsServed(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	script := filepath.Join(t.TempDir(), "bounds.sh")
	writeFile(t, script, 0o755, fmt.Sprintf(`#!/usr/bin/env bash
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"wide","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"},"max_concurrency":%d},{"name":"wide_batch","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"},"batch":{"max_size":%d}}]}'
while IFS= read -r line; do
	[[ $line =~ \"id\":\"([^\"]*)\" ]] || continue
	id=${BASH_REMATCH[1]}
	if [[ $line =~ \"type\":\"batch\" ]]; then
		echo "{\"type\":\"result\",\"id\":\"$id\",\"results\":[{\"output\":{}}]}"
	else
		echo "{\"type\":\"result\",\"id\":\"$id\",\"output\":{}}"
	fi
done
`, worker.MaxConcurrency, worker.MaxBatchSize))
	startWorker(t, nc, worker.Config{Command: []string{script}})
	waitServing(t, nc, "wide", `{}`, 20*time.Second)
	waitServing(t, nc, "wide_batch", `{}`, 20*time.Second)
}

// A worker that exits while a child it started holds its stdout (a helper,
// a daemon) is noticed by its exit: its algorithms leave discovery, it is
// restarted, and the child, when it stayed in the worker's process group,
// is killed. Before, the runner waited for the end of stdout, kept the
// dead worker registered, and answered every request 503 for as long as
// the child lived.
func TestWorkerExitNoticedWhileAChildHoldsStdout(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	cases := []struct {
		name        string
		fork        string // how the worker starts its child
		childKilled bool
	}{
		{"child in the worker's group", "sleep 1000 </dev/null &", true},
		{"child that left the group", "setsid sleep 1000 </dev/null &", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "child.pid")
			script := filepath.Join(dir, "forker.sh")
			// On {"die":true} the worker answers, starts a child that
			// inherits its stdout and stderr, and exits.
			writeFile(t, script, 0o755, `#!/usr/bin/env bash
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"forker","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}}]}'
while IFS= read -r line; do
	[[ $line =~ \"id\":\"([^\"]*)\" ]] || continue
	echo "{\"type\":\"result\",\"id\":\"${BASH_REMATCH[1]}\",\"output\":{\"pid\":$$}}"
	if [[ $line =~ \"die\":true ]]; then
		`+tc.fork+`
		child=$!
		echo $child > "`+pidFile+`"
		# Exit once the child runs sleep (setsid has left the group).
		until [ "$(cat /proc/$child/comm 2>/dev/null)" = sleep ]; do :; done
		exit 3
	fi
done
`)
			t.Cleanup(func() {
				if b, err := os.ReadFile(pidFile); err == nil {
					if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
						// setsid may have forked: kill its group too.
						_ = syscall.Kill(-p, syscall.SIGKILL)
						_ = syscall.Kill(p, syscall.SIGKILL)
					}
				}
			})
			logs := startWorker(t, nc, worker.Config{Command: []string{script}, MinBackoff: 10 * time.Millisecond})
			var first struct{ PID int }
			if err := json.Unmarshal(waitServing(t, nc, "forker", `{}`, 20*time.Second).Data, &first); err != nil || first.PID == 0 {
				t.Fatalf("first pid: %v", err)
			}
			natstest.Eventually(t, 10*time.Second, func() bool { return len(lookup(t, nc, "forker")) == 1 }, "forker is not registered")
			before := lookup(t, nc, "forker")[0].Instance
			if e := protocol.ReplyError(call(t, nc, "forker", `{"die":true}`, nil)); e != nil {
				t.Fatalf("the last request before the exit: %v", e)
			}
			// The exit is noticed: a new process serves, under a new
			// instance.
			natstest.Eventually(t, 20*time.Second, func() bool {
				m, err := nc.Request("run.forker", []byte(`{}`), time.Second)
				var now struct{ PID int }
				return err == nil && protocol.ReplyError(m) == nil && json.Unmarshal(m.Data, &now) == nil && now.PID != first.PID
			}, "the worker that exited is not replaced while its child holds its stdout\n%s", logs)
			natstest.Eventually(t, 10*time.Second, func() bool {
				recs := lookup(t, nc, "forker")
				return len(recs) == 1 && recs[0].Instance != before
			}, "the exited worker's registration stays")
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			child, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.childKilled {
				natstest.Eventually(t, 10*time.Second, func() bool { return !alive(child) }, "the child %d in the worker's process group still runs", child)
			} else if !alive(child) {
				t.Fatalf("the child that left the group was killed: only the group is")
			}
		})
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) state ...: the state follows the last ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// Input that is valid JSON but that a Python worker cannot read (nested
// 2000 deep, an integer of 5001 digits) is answered 400 and the process
// keeps serving: by the runner before forwarding, naming the place, within
// the default bounds; by the Python SDK itself when the runner's bounds
// are raised. Before, the deep input made the SDK raise RecursionError and
// exit, and the long number was read as "not JSON", left unanswered until
// its deadline, and the process killed after the cancel grace.
func TestInputAWorkerCannotParse(t *testing.T) {
	deep := `{"value":` + strings.Repeat("[", 2000) + strings.Repeat("]", 2000) + `}`
	big := `{"value":{"n":[1,1` + strings.Repeat("0", 5000) + `]}}`
	cases := []struct {
		name          string
		depth, number int // Config.MaxInputDepth, MaxInputNumber
		body          string
		message       string // in the error's message or violation
		pointer       string // of the violation, when the runner refuses
	}{
		{"deep, refused by the runner", 0, 0, deep, "nested deeper than 512 levels", "/value" + strings.Repeat("/0", 511)},
		{"long number, refused by the runner", 0, 0, big, "a number of 5001 characters; at most 1000", "/value/n/1"},
		{"deep, refused by the SDK", 5000, 0, deep, "nests deeper than this worker's JSON parser allows", ""},
		{"long number, refused by the SDK", 0, 10000, big, "integer of 5001 digits", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			nc := s.Connect()
			logs := startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py"), MaxInputDepth: tc.depth, MaxInputNumber: tc.number})
			// The adapter's algorithms subscribe one after another: kind
			// may answer a moment after pid.
			waitServing(t, nc, "kind", `{"value":[[1]]}`, 20*time.Second)
			before := pid(t, nc)
			m := call(t, nc, "kind", tc.body, nats.Header{protocol.HeaderTimeout: []string{"10s"}})
			e := protocol.ReplyError(m)
			if e == nil || e.Code != protocol.CodeInvalidInput {
				t.Fatalf("got %v, want 400\n%s", e, logs)
			}
			if tc.pointer != "" {
				if len(e.Violations) != 1 || e.Violations[0].Pointer != tc.pointer || !strings.Contains(e.Violations[0].Message, tc.message) {
					t.Fatalf("violations %v, want %q at %.40s…", e.Violations, tc.message, tc.pointer)
				}
			} else if !strings.Contains(e.Message, tc.message) {
				t.Fatalf("message %q, want %q", e.Message, tc.message)
			}
			if after := pid(t, nc); after != before {
				t.Fatalf("the worker was replaced (pid %d -> %d)\n%s", before, after, logs)
			}
			if m := call(t, nc, "kind", `{"value":[[1]]}`, nil); string(m.Data) == "" || protocol.ReplyError(m) != nil {
				t.Fatalf("a plain request after: %v %s", protocol.ReplyError(m), m.Data)
			}
		})
	}
}

// A worker writing stderr as fast as it can costs the log a bounded
// amount: lines are cut at 4 KiB, at most a burst of 1000 and then 100 a
// second are logged, and a "suppressed" entry counts the rest; the worker
// keeps answering requests meanwhile. Before, every line went to the log
// whole: 573 MB of log in 5 s.
func TestStderrFloodIsCapped(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	script := filepath.Join(t.TempDir(), "flood.sh")
	writeFile(t, script, 0o755, `#!/usr/bin/env bash
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"flood","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}}]}'
line=$(head -c 20000 /dev/zero | tr '\0' x)
(while :; do echo "$line"; done) >&2 &
while IFS= read -r l; do
	[[ $l =~ \"id\":\"([^\"]*)\" ]] || continue
	echo "{\"type\":\"result\",\"id\":\"${BASH_REMATCH[1]}\",\"output\":{}}"
done
`)
	// The log is kept up to 32 MB: past that the flood is not capped
	// (and the test must not hold gigabytes).
	logs := &cappedLog{max: 32 << 20}
	w, err := worker.New(nc, worker.Config{Command: []string{script}, Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop within 30s")
		}
	})
	waitServing(t, nc, "flood", `{}`, 20*time.Second)
	// Requests are answered while the flood goes on.
	for range 20 {
		if e := protocol.ReplyError(call(t, nc, "flood", `{}`, nil)); e != nil {
			t.Fatalf("request during the flood: %v", e)
		}
	}
	var suppressed float64
	natstest.Eventually(t, 30*time.Second, func() bool {
		if logs.full() {
			t.Fatalf("the log grew past %d bytes within %s", logs.max, time.Since(start).Round(time.Millisecond))
		}
		for _, l := range logs.lines(map[string]string{"message": "worker log lines suppressed: over the worker's log rate"}) {
			if n, _ := l["suppressed"].(float64); n > 0 {
				suppressed += n
			}
		}
		return suppressed > 0
	}, "no suppressed-lines entry")
	lines := logs.lines(map[string]string{"source": "stderr"})
	elapsed := time.Since(start).Seconds()
	if limit := 1000 + 100*elapsed + 100; float64(len(lines)) > limit {
		t.Errorf("%d stderr lines logged in %.1fs: want at most %.0f", len(lines), elapsed, limit)
	}
	for _, l := range lines {
		if msg := fmt.Sprint(l["message"]); len(msg) > 4096 || l["truncated"] != true {
			t.Fatalf("a stderr line of %d bytes logged (truncated=%v): want it cut to 4096", len(msg), l["truncated"])
		}
	}
	t.Logf("%d stderr lines logged, %.0f suppressed, %d bytes of log in %.1fs", len(lines), suppressed, logs.size(), elapsed)
}

// cappedLog keeps what is written up to max bytes and counts the rest.
type cappedLog struct {
	logBuffer
	max   int
	mu    sync.Mutex
	total int
}

func (c *cappedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.total += len(p)
	keep := c.total <= c.max
	c.mu.Unlock()
	if keep {
		return c.logBuffer.Write(p)
	}
	return len(p), nil
}

func (c *cappedLog) full() bool { return c.size() > c.max }

func (c *cappedLog) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

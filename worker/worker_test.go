package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

// logBuffer collects a worker's logs; the test prints them when it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log entries that have every key/value of want.
func (b *logBuffer) lines(want map[string]string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		ok := true
		for k, v := range want {
			if fmt.Sprint(m[k]) != v {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func sdkCommand(t *testing.T, module string) []string {
	t.Helper()
	py := python.Find(t)
	sdk, err := filepath.Abs("../sdk/python/pnpworker.py")
	if err != nil {
		t.Fatal(err)
	}
	return []string{py, sdk, module}
}

// startWorker runs a worker until the test ends and returns its logs.
func startWorker(t *testing.T, nc *nats.Conn, cfg worker.Config) *logBuffer {
	t.Helper()
	_, logs := runWorker(t, nc, cfg)
	return logs
}

func call(t *testing.T, nc *nats.Conn, alg, body string, hdr nats.Header) *nats.Msg {
	t.Helper()
	m, err := nc.RequestMsg(&nats.Msg{Subject: "run." + alg, Data: []byte(body), Header: hdr}, 15*time.Second)
	if err != nil {
		t.Fatalf("request %s %s: %v", alg, body, err)
	}
	return m
}

// waitServing polls until alg answers body without error, and returns the
// reply.
func waitServing(t *testing.T, nc *nats.Conn, alg, body string, within time.Duration) *nats.Msg {
	t.Helper()
	var last *nats.Msg
	natstest.Eventually(t, within, func() bool {
		m, err := nc.Request("run."+alg, []byte(body), time.Second)
		if err != nil || protocol.ReplyError(m) != nil {
			return false
		}
		last = m
		return true
	}, "%s does not answer %s", alg, body)
	return last
}

func pid(t *testing.T, nc *nats.Conn) int {
	t.Helper()
	var p int
	if err := json.Unmarshal(waitServing(t, nc, "pid", `{}`, 20*time.Second).Data, &p); err != nil || p == 0 {
		t.Fatalf("pid: %v", err)
	}
	return p
}

func lookup(t *testing.T, nc *nats.Conn, alg string) []discovery.Registration {
	t.Helper()
	recs, err := lookupErr(t, nc, alg)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// lookupErr returns the live registrations of alg, or why it could not.
func lookupErr(t *testing.T, nc *nats.Conn, alg string) ([]discovery.Registration, error) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reg, err := discovery.Open(ctx, js, discovery.Config{})
	if err != nil {
		return nil, err
	}
	return reg.Lookup(ctx, alg)
}

// A module in the original convention is served: schemas from type hints,
// version from VERSION, description from the docstring; wrong types are a
// 400 naming the JSON pointer, Reject a 422, other exceptions a 500 with the
// traceback in the log; stray prints go to the log, not into the protocol.
func TestPythonModuleServed(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	logs := startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})

	m := waitServing(t, nc, "greet", `{"name":"Ada","times":2}`, 20*time.Second)
	if got := string(m.Data); got != `{"text":"hello Ada hello Ada"}` {
		t.Fatalf("greet = %s", got)
	}
	if v := m.Header.Get(protocol.HeaderVersion); v != "2.1.0" {
		t.Errorf("version header %q, want the module's VERSION 2.1.0", v)
	}
	var recs []discovery.Registration
	natstest.Eventually(t, 5*time.Second, func() bool { recs = lookup(t, nc, "greet"); return len(recs) == 1 }, "greet is not registered")
	if len(recs) != 1 || recs[0].Description != "Greets someone, maybe loudly." || !strings.Contains(string(recs[0].InputSchema), `"times"`) {
		t.Fatalf("discovery records %+v", recs)
	}
	if md := recs[0].Metadata; !strings.HasPrefix(md["worker_sdk"], "pnpworker-python/") || md["worker_pid"] == "" || !strings.Contains(md["worker"], "adapter.py") {
		t.Errorf("registration metadata %v: want worker, worker_pid and worker_sdk", md)
	}

	cases := []struct {
		name, alg, body string
		code            int
		pointer, msg    string
	}{
		{"wrong type", "greet", `{"name":"Ada","times":"two"}`, 400, "/times", ""},
		{"literal", "greet", `{"name":"Ada","style":"shouty"}`, 400, "/style", ""},
		{"missing", "greet", `{}`, 400, "", ""},
		{"reject", "picky", `{"word":"now"}`, 422, "", `'now' is not the magic word`},
		{"exception", "picky", `{"word":"explode"}`, 500, "", "internal error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := protocol.ReplyError(call(t, nc, tc.alg, tc.body, nil))
			if e == nil || e.Code != tc.code {
				t.Fatalf("got %v, want code %d", e, tc.code)
			}
			if tc.pointer != "" && (len(e.Violations) == 0 || e.Violations[0].Pointer != tc.pointer) {
				t.Errorf("violations %v, want pointer %s", e.Violations, tc.pointer)
			}
			if tc.msg != "" && e.Message != tc.msg {
				t.Errorf("message %q, want %q", e.Message, tc.msg)
			}
		})
	}
	if m := call(t, nc, "picky", `{"word":"please"}`, nil); string(m.Data) != `{"ok":true}` {
		t.Fatalf("picky after an exception: %s", m.Data)
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		for _, l := range logs.lines(map[string]string{"algorithm": "picky", "code": "500"}) {
			if strings.Contains(fmt.Sprint(l["detail"]), "Traceback") && strings.Contains(fmt.Sprint(l["detail"]), "exploded") {
				return true
			}
		}
		return false
	}, "no traceback of the exception in the log")
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(logs.lines(map[string]string{"source": "stderr", "message": "a stray print to stdout must not break the protocol"})) > 0 &&
			len(logs.lines(map[string]string{"source": "stderr", "message": "greeting Ada"})) > 0
	}, "stdout and stderr prints are not in the log")
	call(t, nc, "log", `{"message":"from python"}`, nats.Header{protocol.HeaderJobID: []string{"job-42"}})
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(logs.lines(map[string]string{"source": "worker", "message": "from python", "level": "warn", "algorithm": "log", "job_id": "job-42"})) == 1
	}, "pnpworker.log did not reach the log with the algorithm and job id")
	if l := logs.lines(map[string]string{"source": "stderr", "message": "greeting Ada"}); !strings.Contains(fmt.Sprint(l[0]["algorithms"]), "greet") {
		t.Errorf("stderr line without the algorithm names: %v", l[0])
	}
}

// Messages up to the server's max payload go both ways.
func TestBigMessages(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})
	waitServing(t, nc, "pid", `{}`, 20*time.Second)
	text := strings.Repeat("x", int(nc.MaxPayload())-200)
	in, _ := json.Marshal(map[string]string{"text": text[:len(text)-100]})
	m := call(t, nc, "echo", string(in), nil)
	if e := protocol.ReplyError(m); e != nil {
		// The output is the input plus a little: it may exceed the
		// payload, which must then be a clean 500.
		if e.Code != protocol.CodeInternal {
			t.Fatalf("big echo: %v", e)
		}
	}
	half, _ := json.Marshal(map[string]string{"text": text[:len(text)/2]})
	m = call(t, nc, "echo", string(half), nil)
	var out struct{ Length int }
	if err := json.Unmarshal(m.Data, &out); err != nil || out.Length != len(text)/2 {
		t.Fatalf("echo of %d bytes: %v %.100s", len(half), err, m.Data)
	}
}

// kill -9 of the worker process: the requests it held get a retryable
// error, its algorithms leave discovery, and it is back and serving within
// 5 s under a new pid and a new instance.
func TestKilledWorkerComesBack(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})
	old := pid(t, nc)
	// A runner subscribes before it registers: wait for the record.
	var before []discovery.Registration
	natstest.Eventually(t, 5*time.Second, func() bool {
		before = lookup(t, nc, "sleep")
		return len(before) == 1
	}, "sleep is not registered")

	inFlight := make(chan *nats.Msg, 3)
	for range 3 {
		go func() {
			m, _ := nc.Request("run.sleep", []byte(`{"ms":10000}`), 15*time.Second)
			inFlight <- m
		}()
	}
	natstest.Eventually(t, 5*time.Second, func() bool {
		m, err := nc.Request("$SRV.STATS.sleep", nil, time.Second)
		return err == nil && bytes.Contains(m.Data, []byte(`"in_flight":3`))
	}, "three requests in flight")
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range 3 {
		m := <-inFlight
		if m == nil {
			t.Fatal("an in-flight request got no reply")
		}
		e := protocol.ReplyError(m)
		if e == nil || !e.Retryable() {
			t.Fatalf("in-flight request: got %v, want a retryable error", e)
		}
	}
	// Back within 5 s, as a new process and a new instance.
	var now int
	natstest.Eventually(t, 5*time.Second, func() bool {
		m, err := nc.Request("run.pid", []byte(`{}`), time.Second)
		if err != nil || protocol.ReplyError(m) != nil {
			return false
		}
		return json.Unmarshal(m.Data, &now) == nil && now != old
	}, "the worker is not back within 5s of kill -9")
	t.Logf("back %s after kill -9", time.Since(killed).Round(time.Millisecond))
	var after []discovery.Registration
	natstest.Eventually(t, 5*time.Second, func() bool {
		after = lookup(t, nc, "sleep")
		return len(after) == 1 && after[0].Instance != before[0].Instance
	}, "registrations after restart %v (before %v): want one new instance", &after, before)
}

// While the process is down its algorithms are not in discovery.
func TestAlgorithmsLeaveDiscoveryWhileDown(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	// The process serves until the gate file appears, then exits and
	// cannot start again until the file is gone.
	script := filepath.Join(dir, "gated.sh")
	writeFile(t, script, 0o755, `#!/usr/bin/env bash
[ -e "`+gate+`" ] && exit 3
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"gated","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}}]}'
while IFS= read -r line; do
	[[ $line =~ \"id\":\"([^\"]*)\" ]] || continue
	if [ -e "`+gate+`" ]; then exit 3; fi
	echo "{\"type\":\"result\",\"id\":\"${BASH_REMATCH[1]}\",\"output\":{}}"
done
`)
	startWorker(t, nc, worker.Config{Command: []string{script}, MaxBackoff: 200 * time.Millisecond})
	waitServing(t, nc, "gated", `{}`, 10*time.Second)
	natstest.Eventually(t, 5*time.Second, func() bool { return len(lookup(t, nc, "gated")) == 1 }, "gated is not registered while up")
	writeFile(t, gate, 0o644, "")
	m := call(t, nc, "gated", `{}`, nil)
	if e := protocol.ReplyError(m); e == nil || !e.Retryable() {
		t.Fatalf("request to a dying worker: %v, want retryable", e)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return len(lookup(t, nc, "gated")) == 0 }, "registration stays while the worker is down")
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	waitServing(t, nc, "gated", `{}`, 10*time.Second)
	natstest.Eventually(t, 5*time.Second, func() bool { return len(lookup(t, nc, "gated")) == 1 }, "gated is not registered after coming back")
}

// A request past its deadline is cancelled in the worker: a worker that
// honours the cancel keeps running; one that ignores it is killed after
// the grace and restarted.
func TestCancellation(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	logs := startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py"), CancelGrace: 500 * time.Millisecond})
	first := pid(t, nc)
	short := nats.Header{protocol.HeaderTimeout: []string{"200ms"}}

	if e := protocol.ReplyError(call(t, nc, "sleep", `{"ms":5000}`, short)); e == nil || e.Code != protocol.CodeDeadline {
		t.Fatalf("cooperative sleep past its deadline: %v, want 504", e)
	}
	// The cooperative worker answers the cancel and stays the same
	// process.
	natstest.Eventually(t, 5*time.Second, func() bool {
		return len(logs.lines(map[string]string{"message": "cancelled request answered", "algorithm": "sleep"})) == 1
	}, "the cancelled request was not answered")
	if len(logs.lines(map[string]string{"message": "killing worker process"})) != 0 {
		t.Fatal("a worker that honoured the cancel was killed")
	}
	if p := pid(t, nc); p != first {
		t.Fatalf("a worker that honoured the cancel was restarted (pid %d -> %d)", first, p)
	}

	if e := protocol.ReplyError(call(t, nc, "sleep", `{"ms":60000,"ignore_cancel":true}`, short)); e == nil || e.Code != protocol.CodeDeadline {
		t.Fatalf("stubborn sleep past its deadline: %v, want 504", e)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		m, err := nc.Request("run.pid", []byte(`{}`), time.Second)
		var p int
		return err == nil && protocol.ReplyError(m) == nil && json.Unmarshal(m.Data, &p) == nil && p != first
	}, "a worker that ignored the cancel was not replaced")
	if len(logs.lines(map[string]string{"message": "worker ignored a cancel past the grace", "algorithm": "sleep"})) != 1 {
		t.Errorf("no log entry for the ignored cancel")
	}
}

// A line that is not JSON fails only the request it names (500); a line
// that names none is logged and ignored; the process keeps serving.
func TestGarbageOnStdoutFailsOnlyThatRequest(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	rogue, _ := filepath.Abs("testdata/rogue.sh")
	logs := startWorker(t, nc, worker.Config{Command: []string{rogue}})
	m := waitServing(t, nc, "rogue", `{"mode":"ok"}`, 10*time.Second)
	var before struct{ PID int }
	json.Unmarshal(m.Data, &before)

	var wg sync.WaitGroup
	replies := make([]*nats.Msg, 6)
	for i := range replies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mode := "ok"
			switch i {
			case 2:
				mode = "garbage"
			case 4:
				mode = "noise"
			}
			replies[i], _ = nc.Request("run.rogue", fmt.Appendf(nil, `{"mode":%q}`, mode), 10*time.Second)
		}()
	}
	wg.Wait()
	for i, m := range replies {
		if m == nil {
			t.Fatalf("request %d: no reply", i)
		}
		e := protocol.ReplyError(m)
		if i == 2 {
			if e == nil || e.Code != protocol.CodeInternal {
				t.Errorf("garbage reply: %v, want 500", e)
			}
			continue
		}
		if e != nil {
			t.Errorf("request %d failed: %v", i, e)
		}
	}
	m = call(t, nc, "rogue", `{"mode":"ok"}`, nil)
	var after struct{ PID int }
	json.Unmarshal(m.Data, &after)
	if after.PID == 0 || after.PID != before.PID {
		t.Errorf("the process was replaced (%d -> %d)", before.PID, after.PID)
	}
	if len(logs.lines(map[string]string{"message": "worker broke the protocol; line ignored"})) == 0 ||
		len(logs.lines(map[string]string{"message": "worker broke the protocol; failing that request"})) == 0 {
		t.Errorf("protocol violations not logged")
	}
}

// 64 concurrent callers of a Python batch function are served in batches,
// each with its own answer; a Reject returned for one item fails it alone.
func TestPythonBatch(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	startWorker(t, nc, worker.Config{Command: sdkCommand(t, "testdata/adapter.py")})
	waitServing(t, nc, "double", `{"n":1}`, 20*time.Second)

	const callers = 64
	replies := make([]*nats.Msg, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := i
			if i == 7 {
				n = -1
			}
			replies[i], _ = nc.Request("run.double", fmt.Appendf(nil, `{"n":%d}`, n), 10*time.Second)
		}()
	}
	wg.Wait()
	for i, m := range replies {
		if m == nil {
			t.Fatalf("caller %d: no reply", i)
		}
		e := protocol.ReplyError(m)
		if i == 7 {
			if e == nil || e.Code != protocol.CodeUnprocessable {
				t.Errorf("negative item: %v, want 422", e)
			}
			continue
		}
		var out struct{ Doubled int }
		if e != nil || json.Unmarshal(m.Data, &out) != nil || out.Doubled != 2*i {
			t.Errorf("caller %d: %v %s", i, e, m.Data)
		}
	}
	msg, err := nc.Request("$SRV.STATS.double", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Endpoints []struct {
			Data struct{ Batches runner.BatchStats } `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) != 1 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	b := st.Endpoints[0].Data.Batches
	// waitServing's probes are items too.
	if b.Items < callers+1 || b.MaxSize < 2 || b.AvgSize <= 1 || b.MaxSize > 16 {
		t.Fatalf("batch stats %+v: want %d items or more in batches of 2 to 16", b, callers+1)
	}
}

// A command that cannot start, exits before its hello or says a hello
// that is refused is restarted with capped backoff for as long as Run
// runs, with a log entry per restart: Run never gives up (before, it
// returned "gave up after 21 consecutive failures", and pnp up stopped
// with everything it hosted). Cancelling ends Run with nil.
func TestBrokenWorkerIsRestartedUntilShutdown(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	cases := []struct {
		name string
		cmd  []string
	}{
		{"no such file", []string{"/nonexistent/worker"}},
		{"exits at once", []string{"/bin/sh", "-c", "exit 7"}},
		{"bad hello", []string{"/bin/sh", "-c", `echo '{"type":"hello","protocol":1,"algorithms":[{"name":"Bad Name","version":"1"}]}'; sleep 10`}},
		{"wrong protocol", []string{"/bin/sh", "-c", `echo '{"type":"hello","protocol":99,"algorithms":[]}'; sleep 10`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			w, err := worker.New(nc, worker.Config{Command: tc.cmd, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: zerolog.New(logs)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			const restarts = 30 // more than the 20 after which Run used to give up
			deadline := time.Now().Add(60 * time.Second)
			for len(logs.lines(map[string]string{"message": "worker process stopped; restarting"})) < restarts {
				select {
				case err := <-done:
					t.Fatalf("Run returned %v while the worker was failing; want it to keep restarting\n%s", err, logs)
				case <-time.After(10 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("fewer than %d restarts logged within 60s\n%s", restarts, logs)
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel = %v, want nil", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return within 30s of cancel")
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := worker.New(nil, worker.Config{}); err == nil || !strings.Contains(err.Error(), "command is empty") || !strings.Contains(err.Error(), "nats connection is nil") {
		t.Fatalf("New(nil, zero) = %v", err)
	}
	if err := (worker.Config{Command: []string{"x"}, CancelGrace: -1, MinBackoff: time.Second, MaxBackoff: time.Millisecond}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "cancel grace") || !strings.Contains(err.Error(), "exceeds max backoff") {
		t.Fatalf("Validate = %v", err)
	}
}

func writeFile(t *testing.T, path string, mode os.FileMode, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// A process that stops reading its stdin cannot hold callers: the request
// is answered 504 at its deadline, and the process, into which a line may
// be half written, is killed and restarted. The write to the process times
// out at the caller's deadline, the same instant the runner's deadline
// timer fires: whichever comes first, the answer is 504 (it was 503 when
// the failed write won the race).
func TestWorkerThatStopsReadingIsReplaced(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	script := filepath.Join(t.TempDir(), "deaf.sh")
	writeFile(t, script, 0o755, `#!/usr/bin/env bash
echo '{"type":"hello","protocol":1,"algorithms":[{"name":"deaf","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}}]}'
exec sleep 1000
`)
	logs := startWorker(t, nc, worker.Config{Command: []string{script}, StopTimeout: 500 * time.Millisecond})
	natstest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines(map[string]string{"message": "worker serving"})) == 1
	}, "deaf is not served")
	// More than a pipe buffer holds, so the write blocks.
	big, _ := json.Marshal(map[string]string{"pad": strings.Repeat("x", 256<<10)})
	m := call(t, nc, "deaf", string(big), nats.Header{protocol.HeaderTimeout: []string{"300ms"}})
	if e := protocol.ReplyError(m); e == nil || e.Code != protocol.CodeDeadline || e.Message != "deadline exceeded" {
		t.Fatalf("got %v, want 504 deadline exceeded", e)
	}
	natstest.Eventually(t, 10*time.Second, func() bool {
		return len(logs.lines(map[string]string{"message": "killing worker process", "reason": "stopped reading its stdin"})) == 1 &&
			len(logs.lines(map[string]string{"message": "worker serving"})) == 2
	}, "the process that stopped reading was not replaced")
}

// The backoff grows with consecutive failures only: a process that ran
// StableAfter before it stopped starts the count again, so a worker that
// served for a while and then crashed comes back after MinBackoff, not at
// the pace its earlier crashes had reached. Starts 1 to 3 exit at once,
// start 4 says hello and serves past StableAfter, the rest exit at once:
// the restarts log failures 1, 2, 3, then 1, 2 again, each with its
// doubled backoff.
func TestStableRunResetsTheBackoff(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	dir := t.TempDir()
	count := filepath.Join(dir, "starts")
	script := filepath.Join(dir, "crashy.sh")
	writeFile(t, script, 0o755, `#!/bin/sh
n=$(( $(cat "`+count+`" 2>/dev/null || echo 0) + 1 ))
echo $n > "`+count+`"
if [ $n -eq 4 ]; then
	echo '{"type":"hello","protocol":1,"algorithms":[{"name":"crashy","version":"1.0.0","input_schema":{"type":"object"},"output_schema":{"type":"object"}}]}'
	sleep 3
fi
exit 7
`)
	const minBackoff = 10 * time.Millisecond
	logs := startWorker(t, nc, worker.Config{Command: []string{script}, MinBackoff: minBackoff, MaxBackoff: time.Second, StableAfter: 2 * time.Second})
	restarts := func() []map[string]any {
		return logs.lines(map[string]string{"message": "worker process stopped; restarting"})
	}
	natstest.Eventually(t, 60*time.Second, func() bool { return len(restarts()) >= 5 }, "fewer than 5 restarts logged")
	want := []struct {
		failures int
		backoff  time.Duration
	}{{1, minBackoff}, {2, 2 * minBackoff}, {3, 4 * minBackoff}, {1, minBackoff}, {2, 2 * minBackoff}}
	for i, l := range restarts()[:5] {
		// zerolog writes durations in milliseconds.
		if f, b := l["failures"], l["backoff"]; f != float64(want[i].failures) || b != float64(want[i].backoff.Milliseconds()) {
			t.Errorf("restart %d (after start %d): failures %v, backoff %v ms; want %d, %d ms", i+1, i+1, f, b, want[i].failures, want[i].backoff.Milliseconds())
		}
	}
}

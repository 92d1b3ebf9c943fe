package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// testLog writes to t.Log at warn level and goes quiet when the test ends,
// so a late line from a goroutine never fails the run.
func testLog(t *testing.T) zerolog.Logger {
	t.Helper()
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return zerolog.New(w).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// errorsTo reports a connection's asynchronous errors (slow consumers,
// permission errors) on the test log, naming the connection.
func errorsTo(t *testing.T, name string) nats.Option {
	log := testLog(t)
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		ev := log.Warn().Err(err).Str("conn", name)
		if sub != nil {
			ev = ev.Str("subject", sub.Subject)
		}
		ev.Msg("nats error")
	})
}

// fastConfig keeps every delay short so the suite runs in seconds.
func fastConfig(t *testing.T) controller.Config {
	return controller.Config{
		AckWait:         2 * time.Second,
		RetryBackoff:    20 * time.Millisecond,
		MaxRetryBackoff: 200 * time.Millisecond,
		NoRunnerDelay:   50 * time.Millisecond,
		DrainTimeout:    5 * time.Second,
		Logger:          testLog(t),
	}
}

// echoIn and echoOut are the test algorithms' input and output.
type echoIn struct {
	N       int `json:"n"`
	SleepMS int `json:"sleep_ms,omitempty"`
}

type echoOut struct {
	N int `json:"n"`
}

const echoInputSchema = `{"type":"object","required":["n"],"additionalProperties":false,
 "properties":{"n":{"type":"integer"},"sleep_ms":{"type":"integer","minimum":0}}}`
const echoOutputSchema = `{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`

// newAlgorithm builds a test algorithm named name around fn.
func newAlgorithm(t testing.TB, name string, timeout time.Duration, fn runner.Func[echoIn, echoOut]) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name:           name,
		Version:        "1.0.0",
		InputSchema:    []byte(echoInputSchema),
		OutputSchema:   []byte(echoOutputSchema),
		Timeout:        timeout,
		MaxConcurrency: 32,
	}, fn)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// echo returns its input number after sleeping sleep_ms; a negative number
// is rejected with a 422. calls, when not nil, counts invocations.
func echo(t testing.TB, name string, calls *atomic.Int64) *runner.Algorithm {
	return newAlgorithm(t, name, 5*time.Second, func(ctx context.Context, in echoIn) (echoOut, error) {
		if calls != nil {
			calls.Add(1)
		}
		if in.N < 0 {
			return echoOut{}, protocol.Reject("n must not be negative")
		}
		if in.SleepMS > 0 {
			select {
			case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				return echoOut{}, ctx.Err()
			}
		}
		return echoOut{N: in.N}, nil
	})
}

// runnerHandle is a runner serving in the background.
type runnerHandle struct {
	nc   *nats.Conn
	r    *runner.Runner
	stop func()
}

// instance returns the runner's instance id (its replies' Pnp-Instance).
func (h *runnerHandle) instance() string {
	key := h.r.Instances()[0]
	return key[strings.IndexByte(key, '.')+1:]
}

func startRunner(t *testing.T, srv *natstest.Server, algs ...*runner.Algorithm) *runnerHandle {
	t.Helper()
	nc := srv.Connect(errorsTo(t, "runner"))
	r, err := runner.New(nc, algs, runner.WithDrainTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("runner: %v", err)
		}
	}()
	select {
	case <-r.Started():
	case <-done:
		t.Fatal("runner stopped before starting")
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
	var once sync.Once
	h := &runnerHandle{nc: nc, r: r, stop: func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}}
	t.Cleanup(h.stop)
	return h
}

// ctlHandle is a controller running in the background.
type ctlHandle struct {
	c      *controller.Controller
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned runErr
	runErr error
}

// stop cancels the controller and returns what Run returned.
func (h *ctlHandle) stop() error {
	h.cancel()
	return h.wait(30 * time.Second)
}

// wait waits for Run to return by itself.
func (h *ctlHandle) wait(timeout time.Duration) error {
	select {
	case <-h.done:
		return h.runErr
	case <-time.After(timeout):
		return errors.New("controller did not stop")
	}
}

// startController runs a controller with cfg and the env's store config.
func startController(t *testing.T, e *env, cfg controller.Config) *ctlHandle {
	t.Helper()
	cfg.Store = e.cfg
	nc := e.srv.Connect(errorsTo(t, "controller"))
	c, err := controller.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &ctlHandle{c: c, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		h.runErr = c.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() { _ = h.stop() })
	select {
	case <-c.Ready():
	case <-h.done:
		t.Fatalf("controller stopped before ready: %v", h.runErr)
	case <-time.After(10 * time.Second):
		t.Fatal("controller not ready")
	}
	return h
}

// env is one test's NATS server and a client store over it.
type env struct {
	srv   *natstest.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	cfg   controller.StoreConfig
	store *controller.Store
}

// newEnv starts a server and provisions the streams with cfg, keeping the
// full history of every result key so tests can count outcomes.
func newEnv(t *testing.T, cfg controller.StoreConfig) *env {
	t.Helper()
	cfg.ResultHistory = 64
	srv := natstest.Start(t)
	nc := srv.Connect(errorsTo(t, "test client"))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := controller.Provision(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, nc: nc, js: js, cfg: cfg, store: store}
}

func (e *env) submit(t *testing.T, alg, id string, in any) controller.Submission {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.store.Submit(ctx, alg, b, controller.SubmitOptions{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jobsLeft is the number of messages in JOBS.
func (e *env) jobsLeft(t *testing.T) uint64 {
	t.Helper()
	info, err := e.store.Jobs().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *env) waitResult(t *testing.T, id string) controller.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := e.store.WaitResult(ctx, id, nil)
	if err != nil {
		t.Fatalf("result %s: %v", id, err)
	}
	return r
}

// recorder watches the results bucket to follow a test's progress. The
// proof that each job has exactly one outcome comes from the bucket's
// history instead (env.final), which no reconnect can make incomplete.
type recorder struct {
	mu     sync.Mutex
	finals map[string]bool
}

func record(t *testing.T, e *env) *recorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.store.Results().WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{finals: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			var r controller.Result
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				t.Errorf("record %s: %v", e.Key(), err)
				continue
			}
			if r.Status.Final() {
				rec.mu.Lock()
				rec.finals[e.Key()] = true
				rec.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		_ = w.Stop()
		cancel()
		<-done
	})
	return rec
}

// done counts keys seen with a final record.
func (r *recorder) done() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.finals)
}

// statuses lists every write to key, oldest first: record statuses, and
// "deleted" for deletions (a replay deletes the failed record).
func (e *env) statuses(t *testing.T, key string) []string {
	t.Helper()
	hist, err := e.store.Results().History(context.Background(), key)
	if err != nil {
		t.Fatalf("history of %s: %v", key, err)
	}
	var out []string
	for _, h := range hist {
		if h.Operation() != jetstream.KeyValuePut {
			out = append(out, "deleted")
			continue
		}
		var r controller.Result
		if err := json.Unmarshal(h.Value(), &r); err != nil {
			t.Fatalf("record %s: %v", key, err)
		}
		out = append(out, string(r.Status))
	}
	return out
}

// final returns the one final record of key and its stored bytes, failing
// the test when the key's history holds none or several.
func (e *env) final(t *testing.T, key string) (controller.Result, []byte) {
	t.Helper()
	hist, err := e.store.Results().History(context.Background(), key)
	if err != nil {
		t.Fatalf("history of %s: %v", key, err)
	}
	var (
		res   controller.Result
		raw   []byte
		count int
	)
	for _, h := range hist {
		if h.Operation() != jetstream.KeyValuePut {
			count = 0 // a replay deleted the failed outcome on purpose
			continue
		}
		var r controller.Result
		if err := json.Unmarshal(h.Value(), &r); err != nil {
			t.Fatalf("record %s: %v", key, err)
		}
		if r.Status.Final() {
			res, raw = r, h.Value()
			count++
		}
	}
	if count != 1 {
		t.Fatalf("job %s has %d final records, want exactly 1 (writes: %v)", key, count, e.statuses(t, key))
	}
	return res, raw
}

// checkAll asserts that jobs id(0)..id(n-1) each have exactly one final
// record, succeeded with output n = i, that satisfies schemas/result.json.
func (e *env) checkAll(t *testing.T, n int, id func(int) string) {
	t.Helper()
	sch := resultSchema(t)
	for i := range n {
		res, raw := e.final(t, id(i))
		if res.Status != controller.StatusSucceeded {
			t.Fatalf("job %s: status %s, error %v", id(i), res.Status, res.Error)
		}
		var out echoOut
		if err := json.Unmarshal(res.Output, &out); err != nil || out.N != i {
			t.Fatalf("job %s: output %s, want n=%d", id(i), res.Output, i)
		}
		checkSchema(t, sch, raw)
	}
}

func resultSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	s, err := schemas.Compile("result.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func checkSchema(t testing.TB, s *jsonschema.Schema, b []byte) {
	t.Helper()
	v, err := schemas.DecodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(v); err != nil {
		t.Fatalf("record does not satisfy result.json: %v\n%s", err, b)
	}
}

func jobID(prefix string) func(int) string {
	return func(i int) string { return fmt.Sprintf("%s-%04d", prefix, i) }
}

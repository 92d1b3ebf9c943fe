package controller_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
)

// Defect class: a job whose subject names no possible algorithm. A
// producer publishing to jobs.<name> with a name no runner can register
// (upper case, or thousands of characters) made a job no puller ever
// takes; once the sweep expired it, its dead letter on dead.<name> was
// longer than the control line the server takes, and the server closed
// the controller's connection for good (Run returned): one message in
// JOBS stopped every controller at its first sweep, after every restart.
// Such a job now fails at the next sweep, whatever its age, with 400 and a
// dead letter on dead._invalid, and the controller keeps running.
func TestJobsOfInvalidAlgorithmNamesEndReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	long := "x" + strings.Repeat("y", 4070)
	ids := map[string]string{"inv-upper": "Upper", "inv-long": long}
	for id, alg := range ids {
		msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + alg, Data: []byte(`{"n":1}`),
			Header: nats.Header{controller.HeaderJobID: []string{id}}}
		// A core publish, as `nats pub` does: JOBS stores it.
		if err := e.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.jobsLeft(t) == 2 }, "JOBS did not store the jobs")

	cfg := fastConfig(t)
	// Short, so that on the code before the sweep reached these jobs too.
	cfg.MaxJobAge = 2 * time.Second
	h := startController(t, e, cfg)
	var disconnects int
	natstest.Eventually(t, 20*time.Second, func() bool {
		select {
		case <-h.done:
			return true
		default:
		}
		if !h.nc.IsConnected() {
			disconnects++
		}
		return e.jobsLeft(t) == 0
	}, "the jobs are still in JOBS")
	select {
	case <-h.done:
		t.Fatalf("the controller stopped: %v", h.runErr)
	default:
	}
	if disconnects > 0 || h.nc.Stats().Reconnects > 0 {
		t.Errorf("the controller's connection dropped (seen down %d times, %d reconnects)", disconnects, h.nc.Stats().Reconnects)
	}
	dead := e.deadOf(t, controller.DeadInvalidAlgorithm)
	for id := range ids {
		d := dead[id]
		if len(d) != 1 || d[0].Code != 400 || !strings.Contains(d[0].Reason, "not a valid algorithm name") {
			t.Errorf("%s: dead letters %+v; want one, 400, not a valid algorithm name", id, d)
		}
	}
}

// Defect class: jobs that wait forever, at the seam of the expiry sweep and
// MaxAlgorithms. The sweep skipped every algorithm with a live runner,
// taking it as served; but a controller at MaxAlgorithms pulls none of the
// algorithms past the bound, so their jobs were neither pulled nor swept
// and never expired. The sweep now skips only the algorithms this
// controller pulls.
func TestJobsOfAlgorithmsPastMaxAlgorithmsExpireReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "aaa", nil), echo(t, "zzz", nil))
	cfg := fastConfig(t)
	cfg.MaxAlgorithms = 1 // serves aaa, the first by name
	cfg.MaxJobAge = 2 * time.Second
	startController(t, e, cfg)
	e.submit(t, "aaa", "cap-served", echoIn{N: 1})
	if r := e.waitFinal(t, "cap-served", 20*time.Second); r.Status != controller.StatusSucceeded {
		t.Fatalf("cap-served: %s %+v", r.Status, r.Error)
	}
	e.submit(t, "zzz", "cap-unserved", echoIn{N: 1})
	r := e.waitFinal(t, "cap-unserved", 20*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") || r.DeadLetterSeq == 0 {
		t.Errorf("cap-unserved: %s %+v dead letter %d; want failed as expired, dead-lettered", r.Status, r.Error, r.DeadLetterSeq)
	}
}

// errorRunner answers every request on run.<alg> in the runners' queue
// group with a 500 whose error body is body.
func errorRunner(t *testing.T, e *env, alg string, body []byte) *atomic.Int64 {
	t.Helper()
	nc := e.srv.Connect()
	t.Cleanup(nc.Close)
	var calls atomic.Int64
	_, err := nc.QueueSubscribe(discovery.RequestSubject(alg), "runners", func(m *nats.Msg) {
		calls.Add(1)
		reply := &nats.Msg{Subject: m.Reply, Data: body, Header: nats.Header{}}
		reply.Header.Set(protocol.HeaderErrorCode, "500")
		reply.Header.Set(protocol.HeaderError, "internal")
		_ = nc.PublishMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &calls
}

// Defect class: a job that never ends, at the seam of runner replies and
// result records. The controller stored a runner's error in the job's
// record as it came; an error body close to the max payload made the
// retrying record too large to store, so the attempt was never counted and
// the job went round once a second until its maximum age (7 days), calling
// the runner each time; a final failed record that large was not stored
// either, so a waiting producer never saw an outcome. Errors are now
// bounded before they are stored (message, violations, their count), and
// the job fails after MaxAttempts with a record.
func TestHugeRunnerErrorsEndReliability(t *testing.T) {
	const maxPayload = 64 << 10
	e := newEnvWith(t, controller.StoreConfig{}, natstest.MaxPayload(maxPayload))
	// Written by hand: '<' as it may come on the wire, six bytes each
	// once encoding/json has written it again.
	body := func(msg string, violations int) []byte {
		var b strings.Builder
		b.WriteString(`{"code":500,"message":"` + msg + `","violations":[`)
		for i := range violations {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"pointer":"/` + strings.Repeat("p", 100) + `","message":"` + strings.Repeat("<", 400) + `"}`)
		}
		b.WriteString(`]}`)
		if b.Len() > maxPayload-1024 {
			t.Fatalf("error body of %d bytes does not fit the test's replies", b.Len())
		}
		return []byte(b.String())
	}
	putRecord(t, e, "bigmsg", "fake")
	msgCalls := errorRunner(t, e, "bigmsg", body(strings.Repeat("<", maxPayload-2048), 0))
	putRecord(t, e, "manyviol", "fake")
	violCalls := errorRunner(t, e, "manyviol", body("many", 120))

	cfg := fastConfig(t)
	cfg.MaxAttempts = 3
	startController(t, e, cfg)
	e.submit(t, "bigmsg", "huge-msg", echoIn{N: 1})
	e.submit(t, "manyviol", "huge-viol", echoIn{N: 1})
	for _, c := range []struct {
		id    string
		calls *atomic.Int64
	}{{"huge-viol", violCalls}, {"huge-msg", msgCalls}} {
		id, calls := c.id, c.calls
		r := e.waitFinal(t, id, 20*time.Second)
		if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 500 || r.Attempts != cfg.MaxAttempts {
			t.Errorf("%s: %s %+v after %d attempts; want failed with 500 after %d", id, r.Status, r.Error, r.Attempts, cfg.MaxAttempts)
		}
		if n := calls.Load(); n != int64(cfg.MaxAttempts) {
			t.Errorf("%s: the runner was called %d times, want %d", id, n, cfg.MaxAttempts)
		}
		checkSchema(t, resultSchema(t), mustJSON(t, r))
	}
}

// Defect class: a silent endless loop in the expiry sweep. A swept job is
// acked by deleting it from JOBS; when that delete failed (a controller
// user without $JS.API.STREAM.MSG.DELETE.JOBS), the failure was logged at
// debug level only, and every round found the job again, forever, without
// a word. The sweep now reports it at warn level each round.
func TestSweepDeleteFailureIsLoggedReliability(t *testing.T) {
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		Users: []*server.User{
			{Username: "admin", Password: "a"},
			{Username: "controller", Password: "c", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.MSG.DELETE.JOBS"}},
			}},
		},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	admin, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", "a"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := controller.Provision(ctx, ajs, controller.StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Submit(ctx, "nobody", []byte(`{"n":1}`), controller.SubmitOptions{ID: "undeletable"}); err != nil {
		t.Fatal(err)
	}

	logs := &lineLog{}
	cfg := fastConfig(t)
	cfg.MaxJobAge = time.Second
	cfg.Bind = true
	cfg.Logger = zerolog.New(logs).Level(zerolog.InfoLevel)
	// The permission violations are expected: not on the test's stderr.
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("controller", "c"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c, err := controller.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	r, err := store.WaitResult(ctx, "undeletable", nil)
	if err != nil || r.Status != controller.StatusFailed {
		t.Fatalf("undeletable: %+v, %v; want failed as expired", r, err)
	}
	eventually(t, 20*time.Second, func() bool { return logs.contains("delete job") }, "the failed delete of a swept job is not logged at warn level")
}

// Defect class: a job that never ends, at the seam of failed attempts and
// the results store. An attempt is counted in the retrying record; when
// that record could not be stored (the results bucket gone, say), the
// attempt was not counted and the job was handed back, to call the runner
// again, and again, until its maximum age: seven days of calls. Now a
// retrying record that cannot be stored ends the job like any other store
// failure: handed back for at most 10 deliveries, then failed with its
// dead letter as its outcome.
func TestUnstorableAttemptsEndReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, newAlgorithm(t, "flaky", 5*time.Second, func(context.Context, echoIn) (echoOut, error) {
		calls.Add(1)
		return echoOut{}, errors.New("always fails") // 500, retryable
	}))
	cfg := fastConfig(t)
	cfg.Bind = true // so that nothing provisions the bucket again
	cfg.MaxAttempts = 3
	startController(t, e, cfg)
	if err := e.js.DeleteKeyValue(context.Background(), controller.ResultsBucket); err != nil {
		t.Fatal(err)
	}
	e.submit(t, "flaky", "unstorable", echoIn{N: 1})
	natstest.Eventually(t, 30*time.Second, func() bool { return e.jobsLeft(t) == 0 }, "the job is still in JOBS")
	if d := e.deadOf(t, "flaky")["unstorable"]; len(d) != 1 || d[0].Code != 500 {
		t.Errorf("dead letters %+v, want one with 500", d)
	}
	t.Logf("the runner was called %d times", calls.Load())
	// 10 deliveries, at most one call each.
	if n := calls.Load(); n > 10 {
		t.Errorf("the runner was called %d times", n)
	}
}

// Defect class: headers that cost more than the job. A header a producer
// sets went into the controller's log lines whole: a 60 KB Pnp-Job-Id or
// Pnp-Timeout made each of the job's log lines (and its error) 60 KB, so
// a queue of such jobs wrote gigabytes of log. The job still fails with
// 400 and a dead letter; no log line is longer than a few KB.
func TestHugeHeadersKeepLogLinesShortReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "hdr", nil))
	logs := &lineLog{}
	cfg := fastConfig(t)
	cfg.Logger = zerolog.New(logs).Level(zerolog.DebugLevel)
	startController(t, e, cfg)
	// JetStream stores at most 64 KiB of headers.
	huge := strings.Repeat("x", 60<<10)
	e.publish(t, "hdr", "hdr-id", []byte(`{"n":1}`), nats.Header{controller.HeaderJobID: []string{huge}})
	e.publish(t, "hdr", "hdr-timeout", []byte(`{"n":1}`), nats.Header{controller.HeaderTimeout: []string{huge}})
	r := e.waitFinal(t, "hdr-timeout", 20*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != 400 || len(r.Error.Message) > 2000 {
		t.Errorf("hdr-timeout: %s, error of %d bytes; want failed with 400 and a short message", r.Status, len(r.Error.Message))
	}
	natstest.Eventually(t, 20*time.Second, func() bool { return len(e.deadOf(t, "hdr")) == 2 }, "want two dead letters")
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, line := range strings.Split(logs.b.String(), "\n") {
		if len(line) > 8<<10 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
	}
}

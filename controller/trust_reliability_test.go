package controller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
)

// putRecord stores a current, valid record for alg/instance with the echo
// schemas straight into the discovery bucket, as a runner credential can.
func putRecord(t *testing.T, e *env, alg, instance string) {
	t.Helper()
	now := time.Now().UTC()
	r := discovery.Registration{
		Algorithm: alg, Version: "1.0.0", Instance: instance,
		Subject: discovery.RequestSubject(alg), QueueGroup: "runners",
		InputSchema: json.RawMessage(echoInputSchema), OutputSchema: json.RawMessage(echoOutputSchema),
		TimeoutMS: 1000, MaxConcurrency: 4, StartedAt: now, HeartbeatAt: now,
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Registry().KeyValue().Put(context.Background(), r.Key(), b); err != nil {
		t.Fatal(err)
	}
}

// fakeRunner answers requests on run.<alg> in the runners' queue group
// with body, naming itself instance (when not empty). With limit > 0 it
// leaves the group after limit requests.
func fakeRunner(t *testing.T, e *env, alg, instance, body string, limit int) *atomic.Int64 {
	t.Helper()
	nc := e.srv.Connect()
	var calls atomic.Int64
	sub, err := nc.QueueSubscribe(discovery.RequestSubject(alg), "runners", func(m *nats.Msg) {
		calls.Add(1)
		reply := &nats.Msg{Subject: m.Reply, Data: []byte(body), Header: nats.Header{}}
		if instance != "" {
			reply.Header.Set(protocol.HeaderInstance, instance)
		}
		_ = nc.PublishMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if limit > 0 {
		if err := sub.AutoUnsubscribe(limit); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &calls
}

// A reply is stored as succeeded only when it satisfies the output schema
// the answering instance registered. A fake runner in the queue group —
// naming a real instance or none — answering {"stolen":true} costs an
// attempt (502, retried, so another instance may answer); a job only
// fakes answer fails with 502 after its attempts. The two fakes beside
// the real runner answer 5 requests each and leave, so no mixed job can
// spend all its attempts on them however the server picks.
func TestOutputsAreCheckedAgainstTheSchemaReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	h := startRunner(t, e.srv, echo(t, "mixed", nil))
	fakeRunner(t, e, "mixed", h.instance(), `{"stolen":true}`, 5)
	fakeRunner(t, e, "mixed", "", `{"stolen":true}`, 5)
	putRecord(t, e, "fakeonly", "fake")
	fakeCalls := fakeRunner(t, e, "fakeonly", "fake", `{"stolen":true}`, 0)

	cfg := fastConfig(t)
	cfg.MaxAttempts = 20
	startController(t, e, cfg)
	const n = 20
	for i := range n {
		e.submit(t, "mixed", fmt.Sprintf("m-%d", i), echoIn{N: i})
	}
	e.submit(t, "fakeonly", "fake-1", echoIn{N: 1})

	retried := 0
	for i := range n {
		id := fmt.Sprintf("m-%d", i)
		r := e.waitResult(t, id)
		if r.Status != controller.StatusSucceeded || string(r.Output) != fmt.Sprintf(`{"n":%d}`, i) || r.Instance != h.instance() {
			t.Errorf("%s: status %s output %s instance %q, want succeeded with n %d from %s", id, r.Status, r.Output, r.Instance, i, h.instance())
		}
		retried += strings.Count(strings.Join(e.statuses(t, id), " "), "retrying")
	}
	if retried == 0 {
		t.Errorf("no attempt of %d jobs reached a fake runner (two of three queue members)", n)
	}
	r := e.waitResult(t, "fake-1")
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != protocol.CodeBadGateway || r.Attempts != cfg.MaxAttempts {
		t.Fatalf("fake-1: status %s error %v attempts %d, want failed with 502 after %d attempts", r.Status, r.Error, r.Attempts, cfg.MaxAttempts)
	}
	if r.Error.Instance != "fake" || len(r.Error.Violations) == 0 {
		t.Errorf("fake-1: error %+v, want the instance and the violations", r.Error)
	}
	if got := fakeCalls.Load(); got != int64(cfg.MaxAttempts) {
		t.Errorf("fake runner called %d times, want %d", got, cfg.MaxAttempts)
	}
	checkSchema(t, resultSchema(t), mustJSON(t, r))
	t.Logf("%d of the mixed jobs' attempts reached a fake runner and were retried", retried)
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// consumerNames lists the controller consumers on JOBS.
func consumerNames(t *testing.T, e *env) []string {
	t.Helper()
	var out []string
	l := e.store.Jobs().ListConsumers(context.Background())
	for ci := range l.Info() {
		if strings.HasPrefix(ci.Name, "controller_") {
			out = append(out, ci.Name)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// Every algorithm name ever registered got a durable consumer on JOBS that
// stayed forever. A consumer whose algorithm has had no live runner and no
// waiting job for ConsumerInactiveThreshold is deleted by the server; one
// with a waiting job stays (its backlog stays visible), and the job is
// served when a runner comes back.
func TestConsumersOfGoneAlgorithmsGoReliability(t *testing.T) {
	t.Cleanup(controller.SetBacklogPeriod(100 * time.Millisecond))
	e := newEnv(t, controller.StoreConfig{})
	cfg := fastConfig(t)
	cfg.ConsumerInactiveThreshold = time.Second
	startController(t, e, cfg)
	ctx := context.Background()

	const fakes = 30
	for i := range fakes {
		putRecord(t, e, fmt.Sprintf("fake_%02d", i), "x")
	}
	comeback := startRunner(t, e.srv, echo(t, "comeback", nil))
	eventually(t, 10*time.Second, func() bool { return len(consumerNames(t, e)) == fakes+1 }, "consumers were not created")

	for i := range fakes {
		if err := e.store.Registry().Deregister(ctx, fmt.Sprintf("fake_%02d.x", i)); err != nil {
			t.Fatal(err)
		}
	}
	comeback.stop()
	e.submit(t, "comeback", "waits", echoIn{N: 3})
	eventually(t, 20*time.Second, func() bool { return slices.Equal(consumerNames(t, e), []string{controller.ConsumerName("comeback")}) },
		"consumers of algorithms without runners or jobs still there, or the one with a waiting job gone")
	for deadline := time.Now().Add(3 * cfg.ConsumerInactiveThreshold); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got := consumerNames(t, e); !slices.Equal(got, []string{controller.ConsumerName("comeback")}) {
			t.Fatalf("consumers %v while a job waits for comeback", got)
		}
	}
	if left := e.jobsLeft(t); left != 1 {
		t.Fatalf("JOBS holds %d jobs after the consumers went, want the waiting one", left)
	}
	back := startRunner(t, e.srv, echo(t, "comeback", nil))
	r := e.waitResult(t, "waits")
	if r.Status != controller.StatusSucceeded || r.Instance != back.instance() || string(r.Output) != `{"n":3}` {
		t.Fatalf("waiting job: status %s instance %q output %s", r.Status, r.Instance, r.Output)
	}
}

// A controller serves at most MaxAlgorithms algorithms, whatever number of
// names discovery lists, and says which it leaves.
func TestMaxAlgorithmsBoundsConsumersReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	cfg := fastConfig(t)
	cfg.MaxAlgorithms = 5
	var logs lineLog
	cfg.Logger = zerolog.New(&logs).Level(zerolog.WarnLevel)
	startController(t, e, cfg)
	const n = 40
	for i := range n {
		putRecord(t, e, fmt.Sprintf("fake_%02d", i), "x")
	}
	// Once the controller has seen every record it warns about the rest.
	eventually(t, 10*time.Second, func() bool { return logs.contains(fmt.Sprintf(`"unserved":%d`, n-cfg.MaxAlgorithms)) },
		"no warning about the unserved algorithms")
	eventually(t, 10*time.Second, func() bool { return len(consumerNames(t, e)) >= cfg.MaxAlgorithms }, "no consumers")
	if got := consumerNames(t, e); len(got) != cfg.MaxAlgorithms {
		t.Fatalf("%d consumers, want %d: %v", len(got), cfg.MaxAlgorithms, got)
	}
}

// lineLog collects log lines for a test to look for.
type lineLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineLog) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With one job in flight, the JOBS iterator at PullMaxMessages(1) used to
// idle about 30 s now and then ("no heartbeat received"). 3000 jobs at
// MaxInFlight 1: no job may wait more than 2 s between the end of the job
// before it and its own start, as its result record tells.
func TestOneInFlightNeverStallsReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "single", nil))
	const n = 3000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range n {
		b := fmt.Appendf(nil, `{"n":%d}`, i)
		if _, err := e.js.PublishAsync("jobs.single", b, jetstream.WithMsgID(fmt.Sprintf("s-%04d", i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("jobs not stored")
	}
	cfg := fastConfig(t)
	cfg.MaxInFlight = 1
	startController(t, e, cfg)
	rec := record(t, e)
	// A stalled iterator idles 30 s; waiting 120 s in all lets the test
	// report the stall rather than a timeout.
	eventually(t, 120*time.Second, func() bool { return rec.done() == n }, "not every job finished")

	var spans []controller.Result
	for i := range n {
		r, _ := e.final(t, fmt.Sprintf("s-%04d", i))
		if r.Status != controller.StatusSucceeded || r.FinishedAt == nil {
			t.Fatalf("%s: %s %v", r.JobID, r.Status, r.Error)
		}
		spans = append(spans, r)
	}
	slices.SortFunc(spans, func(a, b controller.Result) int { return a.StartedAt.Compare(b.StartedAt) })
	var worst time.Duration
	var worstID string
	for i := 1; i < len(spans); i++ {
		ready := *spans[i-1].FinishedAt
		if spans[i].SubmittedAt.After(ready) {
			ready = spans[i].SubmittedAt
		}
		if w := spans[i].StartedAt.Sub(ready); w > worst {
			worst, worstID = w, spans[i].JobID
		}
	}
	t.Logf("%d jobs at 1 in flight: longest wait %s (%s), all in %s", n, worst, worstID, spans[n-1].FinishedAt.Sub(spans[0].StartedAt))
	if worst > 2*time.Second {
		t.Fatalf("job %s waited %s after the job before it finished", worstID, worst)
	}
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func patterns(n int, pattern string, salt int) json.RawMessage {
	var b strings.Builder
	fmt.Fprintf(&b, `{"$comment":"%d","type":"object","properties":{`, salt)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"p%d":{"type":"string","pattern":%q}`, i, pattern)
	}
	b.WriteString(`}}`)
	return json.RawMessage(b.String())
}

// Hostile schemas grow a controller by its schema cache budget at most:
// ten records of 470 KB schemas with 8000 patterns (they once grew pnp up
// by 1.1 GB) are refused outright, and twenty distinct schemas at the
// registration limits (about 10 MB each compiled), each used by a job, are
// compiled into a cache that keeps to its budget. The test process holds
// the NATS server too, so the bound allows 16 MiB for its buffers.
func TestHostileSchemasMemoryReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startController(t, e, fastConfig(t))
	before := heapAlloc()
	put := func(alg string, in json.RawMessage) {
		now := time.Now().UTC()
		r := discovery.Registration{
			Algorithm: alg, Version: "1.0.0", Instance: "x", Subject: discovery.RequestSubject(alg), QueueGroup: "runners",
			InputSchema: in, OutputSchema: json.RawMessage(`{}`), TimeoutMS: 1000, MaxConcurrency: 1, StartedAt: now, HeartbeatAt: now,
		}
		if _, err := e.store.Registry().KeyValue().Put(context.Background(), r.Key(), mustJSON(t, r)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		put(fmt.Sprintf("bomb_%d", i), patterns(8000, `^[a-z0-9]{1,40}(-[a-z0-9]{1,40})*$`, i))
	}
	// A job that would make the controller compile one of them.
	fakeRunner(t, e, "bomb_0", "x", `{}`, 0)
	e.submit(t, "bomb_0", "bomb", echoIn{N: 1})
	const heavy = 20
	for i := range heavy {
		alg := fmt.Sprintf("heavy_%d", i)
		put(alg, patterns(16, `^[\pL\pN]{1,30}$`, i))
		fakeRunner(t, e, alg, "x", `{}`, 0)
		e.submit(t, alg, "h-"+alg, echoIn{N: i})
	}
	for i := range heavy {
		if r := e.waitResult(t, fmt.Sprintf("h-heavy_%d", i)); r.Status != controller.StatusSucceeded {
			t.Fatalf("heavy_%d: %s %v", i, r.Status, r.Error)
		}
	}
	after := heapAlloc()
	growth := after - before
	t.Logf("heap before %d MiB, after %d MiB: grew %d MiB (schema cache budget %d MiB)", before>>20, after>>20, growth>>20, controller.DefaultSchemaCacheBytes>>20)
	if limit := int64(controller.DefaultSchemaCacheBytes + 16<<20); growth > limit {
		t.Fatalf("heap grew by %d MiB, more than %d MiB", growth>>20, limit>>20)
	}
}

// Consumers made before they had an InactiveThreshold (by earlier
// controllers, for names registered once) get one when a controller
// starts, and go like the others.
func TestOldConsumersGetAnInactiveThresholdReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	for _, alg := range []string{"legacy_a", "legacy_b"} {
		if _, err := e.js.CreateOrUpdateConsumer(context.Background(), controller.JobsStream, jetstream.ConsumerConfig{
			Durable: controller.ConsumerName(alg), FilterSubject: "jobs." + alg, AckPolicy: jetstream.AckExplicitPolicy,
		}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fastConfig(t)
	cfg.ConsumerInactiveThreshold = time.Second
	startController(t, e, cfg)
	eventually(t, 20*time.Second, func() bool { return len(consumerNames(t, e)) == 0 }, "consumers made before the threshold are still there")
}

// The auto- prefix names jobs that came without an id. A producer that
// names its job auto-<later sequence>-<ms> would store the outcome of the
// job that later gets that id before it exists; such a job leaves only a
// 400 dead letter, and no record under the id. A replay of a job without
// an id (an auto- id of an earlier sequence) still runs. Store.Submit
// refuses the prefix up front.
func TestAutoIDsAreReservedReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "echo", nil))
	startController(t, e, fastConfig(t))
	ctx := context.Background()

	if _, err := e.store.Submit(ctx, "echo", []byte(`{"n":1}`), controller.SubmitOptions{ID: "auto-1-2"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("Submit with an auto- id: %v, want a refusal naming the reserved prefix", err)
	}

	// A job without an id that fails: its dead letter is replayed below.
	plain, err := e.js.Publish(ctx, "jobs.echo", []byte(`{"n":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	future := fmt.Sprintf("auto-%d-%d", plain.Sequence+3, time.Now().Add(time.Minute).UnixMilli())
	hostile := []*nats.Msg{
		{Subject: "jobs.echo", Data: []byte(`{"n":2}`), Header: nats.Header{controller.HeaderJobID: {future}}},
		{Subject: "jobs.echo", Data: []byte(`{"n":3}`), Header: nats.Header{controller.HeaderMsgID: {"auto-12-x"}}},
		{Subject: "jobs.echo", Data: []byte(`{"n":4}`), Header: nats.Header{controller.HeaderMsgID: {"auto-1-1"}, controller.HeaderJobID: {"auto-01-1"}}},
	}
	for _, m := range hostile {
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var dead []controller.DeadLetter
	natstest.Eventually(t, 20*time.Second, func() bool {
		dead, err = e.store.DeadLetters(ctx, "echo")
		return err == nil && len(dead) == 1+len(hostile)
	}, "not every job was dead-lettered")
	var plainDead controller.DeadLetter
	for _, d := range dead {
		if d.JobID == "auto-01-1" || d.JobID == "auto-12-x" || d.JobID == future {
			if d.Code != protocol.CodeInvalidInput || !strings.Contains(d.Reason, "reserved for ids the controller assigns") {
				t.Errorf("dead letter of %s: %d %q, want 400 naming the reserved prefix", d.JobID, d.Code, d.Reason)
			}
			if _, err := e.store.Results().Get(ctx, d.JobID); !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Errorf("%s: a record under the claimed id (%v), want none", d.JobID, err)
			}
			continue
		}
		plainDead = d
	}
	if !strings.HasPrefix(plainDead.JobID, fmt.Sprintf("auto-%d-", plain.Sequence)) || plainDead.Code != protocol.CodeInvalidInput {
		t.Fatalf("dead letter of the job without an id: %+v", plainDead)
	}
	first := e.waitResult(t, plainDead.JobID)
	if _, err := e.store.Replay(ctx, plainDead); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 20*time.Second, func() bool {
		r, err := e.store.Result(ctx, plainDead.JobID)
		return err == nil && r.Status == controller.StatusFailed && r.DeadLetterSeq != 0 && r.DeadLetterSeq != first.DeadLetterSeq
	}, "the replayed job without an id did not run again")
}

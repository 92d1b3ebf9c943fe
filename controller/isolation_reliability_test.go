package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// anyOfChain is a schema of depth levels, each an anyOf of two $refs to
// the next: 2^(depth+2)-2 schemas evaluated on every value, valid or not.
func anyOfChain(depth int) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"$ref":"#/$defs/d0","$defs":{`)
	for i := range depth {
		fmt.Fprintf(&b, `"d%d":{"anyOf":[{"$ref":"#/$defs/d%d"},{"$ref":"#/$defs/d%d"}]},`, i, i+1, i+1)
	}
	fmt.Fprintf(&b, `"d%d":{"type":"string"}}}`, depth)
	return json.RawMessage(b.String())
}

// putSchemaRecord stores a current record for alg/instance with the given
// input schema straight into the discovery bucket, as a runner credential
// can.
func putSchemaRecord(t *testing.T, e *env, alg, instance string, in json.RawMessage) {
	t.Helper()
	now := time.Now().UTC()
	r := discovery.Registration{
		Algorithm: alg, Version: "1.0.0", Instance: instance,
		Subject: discovery.RequestSubject(alg), QueueGroup: "runners",
		InputSchema: in, OutputSchema: json.RawMessage(echoOutputSchema),
		TimeoutMS: 5000, MaxConcurrency: 4, StartedAt: now, HeartbeatAt: now,
	}
	if _, err := e.store.Registry().KeyValue().Put(context.Background(), r.Key(), mustJSON(t, r)); err != nil {
		t.Fatal(err)
	}
}

// allocated is the bytes the process has allocated so far.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// Defect 3 of issue 17: one registration's schema stalled everyone's jobs.
// Beside a real runner, two records of the same algorithm sort first (so
// the old controller tried their schemas first for every job): one whose
// input schema nests 17 anyOf pairs through $ref (1 KB; 2^19 evaluations
// on every value: 3 s and 2.5 GB per job), refused by every reader, and
// one that passes the registration limits but multiplies its branches
// through the items of a nested array, stopped by the budget of one
// check. The real runner's jobs succeed, the nested array fails with the
// runner's own 400, and the controller allocates a bounded amount doing
// it (before: 2.5 GB per job).
func TestOneInstancesSchemaCostsNoOtherJobsReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "iso", &calls))
	putSchemaRecord(t, e, "iso", "0bomb", anyOfChain(17))
	putSchemaRecord(t, e, "iso", "0branchy", json.RawMessage(
		`{"$defs":{"a":{"anyOf":[{"type":"object"},{"items":{"$ref":"#/$defs/a"}},{"items":{"$ref":"#/$defs/a"}}]}},"$ref":"#/$defs/a"}`))
	startController(t, e, fastConfig(t))

	start0 := allocated()
	start := time.Now()
	e.submit(t, "iso", "iso-first", echoIn{N: 0})
	first := e.waitFinal(t, "iso-first", 60*time.Second)
	t.Logf("first job: %s after %s, %d MB allocated", first.Status, time.Since(start).Round(time.Millisecond), (allocated()-start0)>>20)
	const n = 5
	for i := 1; i <= n; i++ {
		e.submit(t, "iso", fmt.Sprintf("iso-%d", i), echoIn{N: i})
	}
	deep := strings.Repeat("[", 24) + strings.Repeat("]", 24) // 3·2^24 evaluations under 0branchy
	e.publish(t, "iso", "iso-deep", []byte(deep), nil)
	for i := 1; i <= n; i++ {
		r := e.waitFinal(t, fmt.Sprintf("iso-%d", i), 60*time.Second)
		if r.Status != controller.StatusSucceeded || string(r.Output) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Errorf("iso-%d: %s %s %+v, want succeeded", i, r.Status, r.Output, r.Error)
		}
	}
	r := e.waitFinal(t, "iso-deep", 60*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != protocol.CodeInvalidInput {
		t.Errorf("iso-deep: %s %+v, want failed with 400", r.Status, r.Error)
	}
	// Deeper than any check can afford: refused whatever the schemas,
	// without a runner call.
	before, callsBefore := allocated(), calls.Load()
	e.publish(t, "iso", "iso-too-deep", []byte(strings.Repeat("[", 3000)+strings.Repeat("]", 3000)), nil)
	r = e.waitFinal(t, "iso-too-deep", 60*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != protocol.CodeInvalidInput ||
		!strings.Contains(r.Error.Message, "nested more than 256 levels") || calls.Load() != callsBefore {
		t.Errorf("iso-too-deep: %s %+v, runner calls %d; want failed with 400 for its depth, no runner call", r.Status, r.Error, calls.Load()-callsBefore)
	}
	t.Logf("a 3000-level array: %d MB allocated", (allocated()-before)>>20)
	grew := allocated() - start0
	t.Logf("%d jobs: %d MB allocated by the process (controller, runner, server)", n+3, grew>>20)
	if grew > 512<<20 {
		t.Fatalf("the process allocated %d MB for %d small jobs, want under 512 MB", grew>>20, n+3)
	}
}

// Defect 15 (a) of issue 17: headers a producer sets that would act on
// DEAD (Nats-Expected-Stream: JOBS, an expected last sequence, a message
// id, roll-ups and TTLs in any case) never reach the dead letter as they
// are: the job is dead-lettered all the same, and the letter's only
// Nats-* header is the controller's own message id. Headers JOBS itself
// refuses cannot be in a job at all.
func TestDeadLettersDropProducerNatsHeadersReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "hdr", nil))
	startController(t, e, fastConfig(t))
	ctx := context.Background()
	lastSeq := func() string {
		info, err := e.store.Jobs().Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return strconv.FormatUint(info.State.LastSeq, 10)
	}
	for _, tc := range []struct {
		name   string
		header func() nats.Header
	}{
		{"expected stream", func() nats.Header { return nats.Header{"Nats-Expected-Stream": {controller.JobsStream}} }},
		{"expected last sequence", func() nats.Header { return nats.Header{"Nats-Expected-Last-Sequence": {lastSeq()}} }},
		{"lower-case roll-up", func() nats.Header { return nats.Header{"nats-rollup": {"all"}} }},
		{"roll-up", func() nats.Header { return nats.Header{"Nats-Rollup": {"all"}} }},
		{"ttl", func() nats.Header { return nats.Header{"Nats-TTL": {"1s"}} }},
		{"upper-case expected stream", func() nats.Header { return nats.Header{"NATS-EXPECTED-STREAM": {controller.JobsStream}} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "hdr-" + strings.ReplaceAll(tc.name, " ", "-")
			msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + "hdr", Data: []byte(`{"n":"not a number"}`), Header: tc.header()}
			msg.Header.Set("Nats-Msg-Id", id)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if _, err := e.js.PublishMsg(pctx, msg); err != nil {
				t.Logf("JOBS refuses a job with %v: %v", msg.Header, err)
				return
			}
			r := e.waitFinal(t, id, 30*time.Second)
			if r.Status != controller.StatusFailed || r.DeadLetterSeq == 0 {
				t.Fatalf("%s: %s, dead letter %d; want failed and dead-lettered", id, r.Status, r.DeadLetterSeq)
			}
			var letter *controller.DeadLetter
			for _, d := range e.deadOf(t, "hdr")[id] {
				if d.Seq == r.DeadLetterSeq {
					letter = &d
				}
			}
			if letter == nil {
				t.Fatalf("%s: dead letter %d not in DEAD", id, r.DeadLetterSeq)
			}
			for k, v := range letter.Header {
				if !strings.HasPrefix(strings.ToLower(k), "nats-") {
					continue
				}
				if k != "Nats-Msg-Id" || len(v) != 1 || !strings.HasPrefix(v[0], id+"@") {
					t.Errorf("%s: the dead letter carries %s: %v", id, k, v)
				}
			}
		})
	}
}

// Defect 15 (b) of issue 17: a runner's output is checked against the
// output schema of the instance that answered, of its version, not
// another version's. Two versions of one algorithm, both in the queue
// group, answer with outputs only their own schema accepts; every job
// succeeds, whichever answers.
func TestOutputCheckedAgainstTheAnsweringVersionReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	version := func(v, out, field string) *runner.Algorithm {
		a, err := runner.NewAlgorithm(runner.Spec{
			Name: "versions", Version: v, InputSchema: []byte(echoInputSchema), OutputSchema: []byte(out),
			Timeout: 5 * time.Second, MaxConcurrency: 8,
		}, func(ctx context.Context, in echoIn) (map[string]int, error) {
			return map[string]int{field: in.N}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	startRunner(t, e.srv, version("1.0.0", `{"type":"object","required":["one"],"additionalProperties":false,"properties":{"one":{"type":"integer"}}}`, "one"))
	startRunner(t, e.srv, version("2.0.0", `{"type":"object","required":["two"],"additionalProperties":false,"properties":{"two":{"type":"integer"}}}`, "two"))
	cfg := fastConfig(t)
	cfg.MaxAttempts = 1
	startController(t, e, cfg)
	waitLive(t, e, "versions", 2)
	const n = 40
	for i := range n {
		e.submit(t, "versions", fmt.Sprintf("v-%d", i), echoIn{N: i})
	}
	answered := map[string]int{}
	for i := range n {
		id := fmt.Sprintf("v-%d", i)
		r := e.waitFinal(t, id, 30*time.Second)
		if r.Status != controller.StatusSucceeded {
			t.Errorf("%s: %s from version %s: %+v", id, r.Status, r.Version, r.Error)
			continue
		}
		answered[r.Version]++
	}
	t.Logf("answered by version: %v", answered)
	if answered["1.0.0"] == 0 || answered["2.0.0"] == 0 {
		t.Fatalf("answers by version %v: the test needs both versions to answer", answered)
	}
}

// waitLive waits until discovery lists n instances of alg.
func waitLive(t *testing.T, e *env, alg string, n int) {
	t.Helper()
	eventually(t, 10*time.Second, func() bool {
		regs, err := e.store.Registry().Lookup(context.Background(), alg)
		return err == nil && len(regs) == n
	}, fmt.Sprintf("discovery never listed %d instances of %s", n, alg))
}

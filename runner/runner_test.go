package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

const textSchema = `{"type":"object","required":["text"],"additionalProperties":false,
 "properties":{"text":{"type":"string","minLength":1},"sleep_ms":{"type":"integer","minimum":0},"mode":{"type":"string"}}}`
const outSchema = `{"type":"object","required":["words"],"properties":{"words":{"type":"integer"}}}`

type in struct {
	Text    string `json:"text"`
	SleepMS int    `json:"sleep_ms"`
	Mode    string `json:"mode"`
}
type out struct {
	Words int `json:"words"`
}

// wordCount is a test algorithm whose behaviour the input chooses: sleep
// (honouring ctx), reject, panic, ignore the deadline, or break its schema.
func wordCount(t testing.TB, mutate func(*runner.Spec)) *runner.Algorithm {
	spec := runner.Spec{
		Name: "word_count", Version: "1.0.0", Description: "counts words",
		InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema),
		Timeout: 5 * time.Second,
	}
	if mutate != nil {
		mutate(&spec)
	}
	a, err := runner.NewAlgorithm(spec, func(ctx context.Context, in in) (any, error) {
		if in.SleepMS > 0 {
			select {
			case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				if in.Mode != "ignore_ctx" {
					return nil, ctx.Err()
				}
				time.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
			}
		}
		switch in.Mode {
		case "reject":
			return nil, runner.Reject("text %q is not countable", in.Text)
		case "panic":
			panic("boom")
		case "bad_output":
			return map[string]any{"words": "many"}, nil
		case "plain_error":
			return nil, errors.New("database password is hunter2")
		}
		return out{Words: len(strings.Fields(in.Text))}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// start runs a runner until the test ends and returns it once it serves.
func start(t *testing.T, nc *nats.Conn, algs []*runner.Algorithm, opts ...runner.Option) (*runner.Runner, context.CancelFunc) {
	t.Helper()
	r, err := runner.New(nc, algs, append([]runner.Option{runner.WithLogger(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runner: %v", err)
		}
	})
	select {
	case <-r.Started():
	case err := <-done:
		t.Fatalf("runner did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
	return r, cancel
}

func request(t *testing.T, nc *nats.Conn, body string, hdr nats.Header) *nats.Msg {
	t.Helper()
	msg, err := nc.RequestMsg(&nats.Msg{Subject: "run.word_count", Data: []byte(body), Header: hdr}, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", body, err)
	}
	return msg
}

func TestNewAlgorithmRejectsBadDefinitions(t *testing.T) {
	fn := func(context.Context, in) (out, error) { return out{}, nil }
	cases := []struct {
		name string
		spec runner.Spec
		want []string
	}{
		{"bad name and version", runner.Spec{Name: "Word Count", Version: "v1", InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema)},
			[]string{`name "Word Count"`, `version "v1"`}},
		{"schema does not compile", runner.Spec{Name: "x", Version: "1.0.0", InputSchema: []byte(`{"type":"nope"}`), OutputSchema: []byte(`{`)},
			[]string{"input schema", "output schema"}},
		{"negative limits", runner.Spec{Name: "x", Version: "1.0.0", InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema), Timeout: -1, MaxConcurrency: -1},
			[]string{"timeout", "max concurrency"}},
		{"timeout over a day", runner.Spec{Name: "x", Version: "1.0.0", InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema), Timeout: 25 * time.Hour},
			[]string{"timeout 25h0m0s"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runner.NewAlgorithm(tc.spec, fn)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// NewAlgorithm derives missing schemas from its types (derive_test.go);
	// a raw algorithm has no types to derive them from.
	_, err := runner.NewRawAlgorithm(runner.Spec{Name: "x", Version: "1.0.0"},
		func(context.Context, json.RawMessage) (json.RawMessage, error) { return nil, nil })
	for _, w := range []string{"input schema is required", "output schema is required"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("raw algorithm without schemas: error %v does not mention %q", err, w)
		}
	}
}

func TestNewRejectsBadRunner(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	a := wordCount(t, nil)
	if _, err := runner.New(nc, nil); err == nil || !strings.Contains(err.Error(), "no algorithms") {
		t.Errorf("no algorithms: %v", err)
	}
	if _, err := runner.New(nc, []*runner.Algorithm{a, a}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := runner.New(nil, []*runner.Algorithm{a}); err == nil || !strings.Contains(err.Error(), "connection is nil") {
		t.Errorf("nil conn: %v", err)
	}
}

func TestErrorReplies(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})

	cases := []struct {
		name       string
		body       string
		hdr        nats.Header
		code       int
		msg        string
		violations []string // "pointer: message" prefixes
	}{
		{"malformed JSON", `{"text":`, nil, 400, "malformed JSON", nil},
		{"trailing garbage", `{"text":"a"} x`, nil, 400, "malformed JSON", nil},
		{"not an object", `[1,2]`, nil, 400, "does not match the schema", []string{"/: expected object"}},
		{"wrong type", `{"text":42}`, nil, 400, "does not match the schema", []string{"/text: expected string"}},
		{"missing and unknown fields", `{"txt":"a"}`, nil, 400, "does not match the schema", []string{"/: additionalProperties 'txt' not allowed", "/: missing properties: 'text'"}},
		{"empty body", ``, nil, 400, "malformed JSON", nil},
		{"rejected by algorithm", `{"text":"a","mode":"reject"}`, nil, 422, `text "a" is not countable`, nil},
		{"panic", `{"text":"a","mode":"panic"}`, nil, 500, "algorithm panicked", nil},
		{"internal error hides details", `{"text":"a","mode":"plain_error"}`, nil, 500, "internal error", nil},
		{"output breaks schema", `{"text":"a","mode":"bad_output"}`, nil, 500, "output that does not match", []string{"/words: expected integer"}},
		{"deadline from header", `{"text":"a","sleep_ms":2000}`, nats.Header{protocol.HeaderTimeout: {"50ms"}}, 504, "deadline exceeded", nil},
		{"deadline ignored by algorithm", `{"text":"a","sleep_ms":300,"mode":"ignore_ctx"}`, nats.Header{protocol.HeaderTimeout: {"50ms"}}, 504, "deadline exceeded", nil},
		{"deadline already passed", `{"text":"a"}`, nats.Header{protocol.HeaderDeadline: {time.Now().Add(-time.Second).Format(time.RFC3339Nano)}}, 504, "deadline exceeded", nil},
		{"bad timeout header", `{"text":"a"}`, nats.Header{protocol.HeaderTimeout: {"soon"}}, 400, "Pnp-Timeout", nil},
		{"bad deadline header", `{"text":"a"}`, nats.Header{protocol.HeaderDeadline: {"tomorrow"}}, 400, "Pnp-Deadline", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := request(t, nc, tc.body, tc.hdr)
			if got := msg.Header.Get(protocol.HeaderErrorCode); got != fmt.Sprint(tc.code) {
				t.Fatalf("code header = %q, want %d (body %s)", got, tc.code, msg.Data)
			}
			if got := msg.Header.Get(protocol.HeaderError); !strings.Contains(got, tc.msg) {
				t.Errorf("error header = %q, want it to contain %q", got, tc.msg)
			}
			var body runner.Error
			if err := json.Unmarshal(msg.Data, &body); err != nil {
				t.Fatalf("error body %q: %v", msg.Data, err)
			}
			if body.Code != tc.code || !strings.Contains(body.Message, tc.msg) || body.Algorithm != "word_count" || body.Instance == "" {
				t.Errorf("body = %+v", body)
			}
			if strings.Contains(string(msg.Data), "hunter2") {
				t.Errorf("internal details leaked: %s", msg.Data)
			}
			if len(body.Violations) != len(tc.violations) {
				t.Fatalf("violations = %v, want %v", body.Violations, tc.violations)
			}
			for i, v := range tc.violations {
				if !strings.HasPrefix(body.Violations[i].String(), v) {
					t.Errorf("violation %d = %q, want prefix %q", i, body.Violations[i], v)
				}
			}
			re := protocol.ReplyError(msg)
			if re == nil || re.Code != tc.code {
				t.Errorf("ReplyError = %v", re)
			}
		})
	}
	// The process survived all of it.
	msg := request(t, nc, `{"text":"still alive"}`, nil)
	if protocol.ReplyError(msg) != nil || string(msg.Data) != `{"words":2}` {
		t.Fatalf("after errors: %s %v", msg.Data, msg.Header)
	}
}

func TestSuccessHeadersAndSentinels(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	r, _ := start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	msg := request(t, nc, `{"text":"one two three"}`, nats.Header{protocol.HeaderJobID: {"job-1"}})
	if string(msg.Data) != `{"words":3}` {
		t.Fatalf("body = %s", msg.Data)
	}
	inst := strings.TrimPrefix(r.Instances()[0], "word_count.")
	for k, want := range map[string]string{protocol.HeaderInstance: inst, protocol.HeaderVersion: "1.0.0", protocol.HeaderAlgorithm: "word_count", protocol.HeaderJobID: "job-1"} {
		if got := msg.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	err := protocol.ReplyError(request(t, nc, `{"text":1}`, nil))
	if !errors.Is(err, runner.ErrInvalidInput) || errors.Is(err, runner.ErrInternal) || err.Retryable() {
		t.Errorf("sentinels: %v", err)
	}
}

func TestReplicasShareLoad(t *testing.T) {
	s := natstest.Start(t)
	a := wordCount(t, nil)
	r1, _ := start(t, s.Connect(), []*runner.Algorithm{a})
	r2, _ := start(t, s.Connect(), []*runner.Algorithm{a})

	js, _ := jetstream.New(s.Connect())
	kv, err := js.KeyValue(context.Background(), discovery.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{r1.Instances()[0], r2.Instances()[0]}
	if len(keys) != 2 || !(keys[0] == want[0] && keys[1] == want[1] || keys[0] == want[1] && keys[1] == want[0]) {
		t.Fatalf("discovery keys = %v, want %v", keys, want)
	}

	client := s.Connect()
	const n = 200
	var mu sync.Mutex
	perInstance := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := client.Request("run.word_count", []byte(fmt.Sprintf(`{"text":"request %d"}`, i)), 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if string(msg.Data) != `{"words":2}` {
				errs <- fmt.Errorf("reply %s %v", msg.Data, msg.Header)
				return
			}
			mu.Lock()
			perInstance[msg.Header.Get(protocol.HeaderInstance)]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for inst, c := range perInstance {
		total += c
		t.Logf("instance %s served %d", inst, c)
	}
	if total != n || len(perInstance) != 2 {
		t.Fatalf("served %d by %d instances, want %d by 2", total, len(perInstance), n)
	}
	for inst, c := range perInstance {
		if c < n/10 {
			t.Errorf("instance %s served only %d of %d", inst, c, n)
		}
	}
}

func TestSlowRequestDoesNotBlockFast(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 2 })})
	slow := make(chan *nats.Msg, 1)
	go func() {
		m, _ := nc.Request("run.word_count", []byte(`{"text":"slow","sleep_ms":3000}`), 10*time.Second)
		slow <- m
	}()
	// Wait until the slow request is running, then a fast one must come back
	// while the slow one is still in progress.
	natstest.Eventually(t, 5*time.Second, func() bool { return inFlight(t, nc) == 1 }, "slow request never started")
	msg := request(t, nc, `{"text":"fast"}`, nil)
	if string(msg.Data) != `{"words":1}` {
		t.Fatalf("fast reply %s", msg.Data)
	}
	select {
	case <-slow:
		t.Fatal("slow request finished before the fast one was answered")
	default:
	}
	if m := <-slow; m == nil || string(m.Data) != `{"words":1}` {
		t.Fatalf("slow reply %v", m)
	}
}

type stats struct {
	InFlight int `json:"in_flight"`
	Waiting  int `json:"waiting"`
	Served   int `json:"served"`
	Rejected int `json:"rejected_overloaded"`
}

// endpointStats reads the runner's own counters from $SRV.STATS.word_count.
func endpointStats(t *testing.T, nc *nats.Conn) stats {
	msg, err := nc.Request("$SRV.STATS.word_count", nil, time.Second)
	if err != nil {
		return stats{InFlight: -1, Waiting: -1}
	}
	var st struct {
		Endpoints []struct {
			Data stats `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) == 0 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	return st.Endpoints[0].Data
}

func inFlight(t *testing.T, nc *nats.Conn) int { return endpointStats(t, nc).InFlight }

func TestOverloadAnswers503(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 1; s.MaxPending = 1 })})
	// One runs, one waits, the third finds no room.
	replies := make(chan *nats.Msg, 2)
	send := func() {
		go func() {
			m, _ := nc.Request("run.word_count", []byte(`{"text":"slow","sleep_ms":2000}`), 15*time.Second)
			replies <- m
		}()
	}
	send()
	natstest.Eventually(t, 5*time.Second, func() bool { st := endpointStats(t, nc); return st.InFlight == 1 }, "first request never started")
	send()
	natstest.Eventually(t, 5*time.Second, func() bool { st := endpointStats(t, nc); return st.Waiting == 1 }, "second request never queued")
	msg := request(t, nc, `{"text":"third"}`, nil)
	if msg.Header.Get(protocol.HeaderErrorCode) != "503" || !strings.Contains(msg.Header.Get(protocol.HeaderError), "overloaded") {
		t.Fatalf("third request: %v %s, want 503 overloaded", msg.Header, msg.Data)
	}
	if e := protocol.ReplyError(msg); !e.NotStarted || msg.Header.Get(protocol.HeaderNotStarted) != "true" {
		t.Errorf("a refused request must say it never started: %v", msg.Header)
	}
	for range 2 {
		if m := <-replies; m == nil || protocol.ReplyError(m) != nil {
			t.Errorf("admitted request failed: %v", m)
		}
	}
	// Served counts a request after its reply is sent: poll for it.
	natstest.Eventually(t, 5*time.Second, func() bool {
		st := endpointStats(t, nc)
		return st.Rejected == 1 && st.Served == 2
	}, "stats = %+v, want 1 rejected and 2 served", endpointStats(t, nc))
}

func TestDrainFinishesInFlightAndDeregistersFirst(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	r, stop := start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	js, _ := jetstream.New(s.Connect())
	kv, _ := js.KeyValue(context.Background(), discovery.Bucket)
	key := r.Instances()[0]
	if _, err := kv.Get(context.Background(), key); err != nil {
		t.Fatalf("registered key: %v", err)
	}
	client := s.Connect()
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, _ := client.Request("run.word_count", []byte(`{"text":"in flight","sleep_ms":500}`), 10*time.Second)
		reply <- m
	}()
	natstest.Eventually(t, 5*time.Second, func() bool { return inFlight(t, client) == 1 }, "request never started")
	stop()
	// The key goes first (at once, not after the max age)...
	natstest.Eventually(t, 2*time.Second, func() bool {
		_, err := kv.Get(context.Background(), key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, "key %s still registered after stop", key)
	// ...and the in-flight request is still answered.
	if m := <-reply; m == nil || string(m.Data) != `{"words":2}` {
		t.Fatalf("in-flight reply: %v", m)
	}
}

func TestDrainTimeoutAnswers503(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	_, stop := start(t, nc, []*runner.Algorithm{wordCount(t, nil)}, runner.WithDrainTimeout(100*time.Millisecond))
	client := s.Connect()
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, _ := client.Request("run.word_count", []byte(`{"text":"long","sleep_ms":4000}`), 10*time.Second)
		reply <- m
	}()
	natstest.Eventually(t, 5*time.Second, func() bool { return inFlight(t, client) == 1 }, "request never started")
	stop()
	m := <-reply
	if m == nil || m.Header.Get(protocol.HeaderErrorCode) != "503" || !strings.Contains(m.Header.Get(protocol.HeaderError), "draining") {
		t.Fatalf("reply after drain timeout: %+v", m)
	}
}

func TestOversizedRequestIsRefusedAndRunnerSurvives(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	big := `{"text":"` + strings.Repeat("a", int(nc.MaxPayload())) + `"}`
	_, err := nc.Request("run.word_count", []byte(big), time.Second)
	if !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("oversized request: %v, want %v", err, nats.ErrMaxPayload)
	}
	if msg := request(t, nc, `{"text":"ok"}`, nil); string(msg.Data) != `{"words":1}` {
		t.Fatalf("after oversized: %s", msg.Data)
	}
}

func TestUnknownAlgorithmHasNoResponders(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	_, err := nc.Request("run.no_such_algorithm", []byte(`{}`), time.Second)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("unknown algorithm: %v, want no responders", err)
	}
}

func TestDrainServesEverythingAlreadyDelivered(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	_, stop := start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 2; s.MaxPending = 1000 })})
	client := s.Connect()
	const n = 300
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, n)
	sub, err := client.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for range n {
		if err := client.PublishRequest("run.word_count", inbox, []byte(`{"text":"queued","sleep_ms":5}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return endpointStats(t, client).Waiting > 10 }, "requests never queued")
	stop()
	codes := map[string]int{}
	for range n {
		select {
		case m := <-replies:
			codes[m.Header.Get(protocol.HeaderErrorCode)]++
		case <-time.After(20 * time.Second):
			t.Fatalf("only %v replies of %d", codes, n)
		}
	}
	if codes[""] != n {
		t.Fatalf("replies by error code = %v, want all %d served", codes, n)
	}
}

func TestDrainTimeoutWithAStuckAlgorithm(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	release := make(chan struct{})
	defer close(release)
	stuck, err := runner.NewAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0", InputSchema: []byte(textSchema), OutputSchema: []byte(outSchema), MaxConcurrency: 1},
		func(ctx context.Context, in in) (out, error) {
			<-release // ignores ctx entirely
			return out{}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	r, err := runner.New(nc, []*runner.Algorithm{stuck}, runner.WithDrainTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	<-r.Started()
	client := s.Connect()
	replies := make(chan *nats.Msg, 2)
	for range 2 { // one runs (stuck), one waits behind it
		go func() {
			m, _ := client.Request("run.word_count", []byte(`{"text":"x"}`), 20*time.Second)
			replies <- m
		}()
	}
	natstest.Eventually(t, 5*time.Second, func() bool { st := endpointStats(t, client); return st.InFlight == 1 && st.Waiting == 1 }, "requests never admitted")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return: a stuck algorithm holds shutdown hostage")
	}
	for range 2 {
		m := <-replies
		if m == nil || m.Header.Get(protocol.HeaderErrorCode) != "503" {
			t.Errorf("reply = %v, want 503 draining", m)
		}
	}
}

func TestOversizedErrorAndOutputStillGetAReply(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	max := int(nc.MaxPayload())
	big, err := runner.NewAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0",
		InputSchema:  []byte(`{"type":"object","properties":{"items":{"type":"array","items":{"type":"string"}},"n":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object"}`)},
		func(ctx context.Context, in struct {
			N int `json:"n"`
		}) (map[string]string, error) {
			return map[string]string{"blob": strings.Repeat("x", in.N)}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	start(t, nc, []*runner.Algorithm{big})
	// An output just under the limit whose headers push it over: stored
	// in the algorithm's own outputs bucket, which the runner created.
	msg := request(t, nc, fmt.Sprintf(`{"n":%d}`, max-20), nil)
	if ref := msg.Header.Get(protocol.HeaderOutputRef); msg.Header.Get(protocol.HeaderErrorCode) != "" || !strings.HasPrefix(ref, "obj://outputs_word_count/") {
		t.Errorf("oversized output: %v, want a reference into outputs_word_count", msg.Header)
	}
	// Without that bucket it cannot be stored: a 500 saying why.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteObjectStore(ctx, "outputs_word_count"); err != nil {
		t.Fatal(err)
	}
	msg = request(t, nc, fmt.Sprintf(`{"n":%d}`, max-20), nil)
	if msg.Header.Get(protocol.HeaderErrorCode) != "500" || !strings.Contains(msg.Header.Get(protocol.HeaderError), "max payload") || !strings.Contains(msg.Header.Get(protocol.HeaderError), "outputs_word_count") {
		t.Errorf("oversized output without its bucket: %v", msg.Header)
	}
	// 100k violations: the error reply is capped and still arrives.
	items := "[" + strings.TrimSuffix(strings.Repeat("1,", 100000), ",") + "]"
	msg = request(t, nc, `{"items":`+items+`}`, nil)
	e := protocol.ReplyError(msg)
	if e == nil || e.Code != 400 || len(e.Violations) != 101 || !strings.Contains(e.Violations[100].Message, "more violations") {
		t.Fatalf("violation flood: %v (%d violations)", msg.Header, len(e.Violations))
	}
}

func TestMicroStatsCountErrors(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	start(t, nc, []*runner.Algorithm{wordCount(t, nil)})
	request(t, nc, `{"text":"a b"}`, nil)
	request(t, nc, `{"text":1}`, nil)
	msg, err := nc.Request("$SRV.STATS.word_count", nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Name      string `json:"name"`
		Endpoints []struct {
			Subject     string `json:"subject"`
			NumRequests int    `json:"num_requests"`
			NumErrors   int    `json:"num_errors"`
			LastError   string `json:"last_error"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) != 1 {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	ep := st.Endpoints[0]
	if st.Name != "word_count" || ep.Subject != "run.word_count" || ep.NumRequests != 2 || ep.NumErrors != 1 || !strings.HasPrefix(ep.LastError, "400:") {
		t.Fatalf("stats = %s", msg.Data)
	}
	for _, subj := range []string{"$SRV.PING", "$SRV.INFO.word_count", "$SRV.PING.word_count"} {
		if _, err := nc.Request(subj, nil, time.Second); err != nil {
			t.Errorf("%s: %v", subj, err)
		}
	}
}

// Workers are started by use: an algorithm that may run 4096 requests at
// once costs no goroutine per slot until the load needs it, and the load
// still gets every slot it needs. Before, New started MaxConcurrency
// goroutines up front (200000 cost 632 MB in a worker's runner).
func TestWorkersStartedByUse(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	before := runtime.NumGoroutine()
	start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 4096 })})
	if grown := runtime.NumGoroutine() - before; grown > 1000 {
		t.Fatalf("a runner serving nothing yet started %d goroutines for MaxConcurrency 4096", grown)
	}
	const n = 16
	replies := make(chan *nats.Msg, n)
	for range n {
		go func() {
			m, _ := nc.Request("run.word_count", []byte(`{"text":"slow","sleep_ms":1000}`), 15*time.Second)
			replies <- m
		}()
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return endpointStats(t, nc).InFlight == n }, "%d requests do not run at once", n)
	for range n {
		if m := <-replies; m == nil || protocol.ReplyError(m) != nil {
			t.Fatalf("request failed: %v", m)
		}
	}
}

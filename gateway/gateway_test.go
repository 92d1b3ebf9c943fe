package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/gateway"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/rollout"
	"github.com/pnpworker/pnpworker/runner"
)

const french = `{"text":"Le renard brun saute par-dessus le chien paresseux"}`

func TestAlgorithmsListsLiveRegistrations(t *testing.T) {
	s := newStack(t, stackOpts{})
	r := s.do(t, "GET", "/v1/algorithms?stats=1", "", nil)
	if r.StatusCode != 200 {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	var algs []struct {
		Name        string            `json:"name"`
		Version     string            `json:"version"`
		InputSchema json.RawMessage   `json:"input_schema"`
		Instances   []json.RawMessage `json:"instances"`
		Stats       *struct {
			Replies int `json:"replies"`
		} `json:"stats"`
	}
	mustJSON(t, r.body, &algs)
	if len(algs) != 2 || algs[0].Name != "language_detection" || algs[1].Name != "probe" {
		t.Fatalf("algorithms %s", r.body)
	}
	if algs[1].Version != "1.2.0" || len(algs[1].Instances) != 1 || !json.Valid(algs[1].InputSchema) {
		t.Fatalf("probe listed as %s", r.body)
	}
	for _, a := range algs {
		if a.Stats == nil || a.Stats.Replies != 1 {
			t.Fatalf("%s: stats %+v, want the one instance's $SRV.STATS reply", a.Name, a.Stats)
		}
	}
}

func TestRunMapsRunnerCodesToStatus(t *testing.T) {
	s := newStack(t, stackOpts{})
	t.Run("french", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/algorithms/language_detection/run", french, map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
		if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d %s: %s", r.StatusCode, r.Header.Get("Content-Type"), r.body)
		}
		var out struct{ Language string }
		mustJSON(t, r.body, &out)
		if out.Language != "fra" && out.Language != "fr" {
			t.Fatalf("language %q, want French: %s", out.Language, r.body)
		}
		if r.Header.Get("Pnp-Instance") == "" || r.Header.Get("Pnp-Algorithm") != "language_detection" || r.Header.Get("Pnp-Version") == "" {
			t.Fatalf("Pnp-* reply headers not passed on: %v", r.Header)
		}
	})
	t.Run("Pnp-Timeout and traceparent reach the runner", func(t *testing.T) {
		spy, err := s.nc.SubscribeSync("run.probe") // a copy of every request
		if err != nil {
			t.Fatal(err)
		}
		defer spy.Unsubscribe()
		if err := s.nc.Flush(); err != nil {
			t.Fatal(err)
		}
		tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		if r := s.do(t, "POST", "/v1/algorithms/probe/run", `{}`, map[string]string{"Pnp-Timeout": "2s", "traceparent": tp}); r.StatusCode != 200 {
			t.Fatalf("run: %d %s", r.StatusCode, r.body)
		}
		m, err := spy.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get("Pnp-Timeout") != "2s" || m.Header.Get("traceparent") != tp {
			t.Fatalf("request headers %v", m.Header)
		}
	})
	cases := []struct {
		name, path, body string
		hdr              map[string]string
		status           int
		pointer          string
	}{
		{"wrong type is 400 with the violation", "/v1/algorithms/language_detection/run", `{"text":42}`, nil, 400, "/text"},
		{"not JSON is 400", "/v1/algorithms/language_detection/run", `{"text":`, nil, 400, ""},
		{"rejected is 422", "/v1/algorithms/language_detection/run", `{"text":"!!"}`, nil, 422, ""},
		{"internal is 500", "/v1/algorithms/probe/run", `{"code":500}`, nil, 500, ""},
		{"unavailable is 503", "/v1/algorithms/probe/run", `{"code":503}`, nil, 503, ""},
		{"Pnp-Timeout passed through makes a 504", "/v1/algorithms/probe/run", `{"sleep_ms":5000}`, map[string]string{"Pnp-Timeout": "100ms"}, 504, ""},
		{"bad Pnp-Timeout is 400", "/v1/algorithms/probe/run", `{}`, map[string]string{"Pnp-Timeout": "soon"}, 400, ""},
		{"unknown algorithm is 404", "/v1/algorithms/nobody/run", `{}`, nil, 404, ""},
		{"invalid name is 404", "/v1/algorithms/No..Such/run", `{}`, nil, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := expectProblem(t, s.do(t, "POST", tc.path, tc.body, tc.hdr), tc.status)
			if tc.pointer != "" && (len(p.Violations) == 0 || p.Violations[0].Pointer != tc.pointer) {
				t.Fatalf("violations %+v, want one at %s", p.Violations, tc.pointer)
			}
		})
	}
}

// A record in discovery with no runner behind it (a runner killed a
// moment ago) is a 404, not a wait for the timeout.
func TestRunWithoutResponderIs404(t *testing.T) {
	s := newStack(t, stackOpts{})
	rec := discovery.Registration{
		Algorithm: "ghost", Version: "1.0.0", Instance: "gone1", Subject: protocol.SubjectPrefix + "ghost", QueueGroup: "runners",
		InputSchema: json.RawMessage(`{}`), OutputSchema: json.RawMessage(`{}`), TimeoutMS: 20000, MaxConcurrency: 1,
		StartedAt: time.Now().UTC(), HeartbeatAt: time.Now().UTC(),
	}
	if err := s.store.Registry().Register(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	s.waitAlgorithms(t, 3)
	p := expectProblem(t, s.do(t, "POST", "/v1/algorithms/ghost/run", `{}`, nil), 404)
	if !strings.Contains(p.Message, "no runner") {
		t.Fatalf("message %q", p.Message)
	}
}

func TestJobsIdempotencyAndLongPoll(t *testing.T) {
	s := newStack(t, stackOpts{})
	key := map[string]string{"Idempotency-Key": "order-17"}
	r := s.do(t, "POST", "/v1/algorithms/language_detection/jobs", french, key)
	if r.StatusCode != 202 || r.Header.Get("Location") != "/v1/jobs/order-17" {
		t.Fatalf("submit: %d %v %s", r.StatusCode, r.Header, r.body)
	}
	var acc struct {
		JobID     string `json:"job_id"`
		Duplicate bool   `json:"duplicate"`
	}
	mustJSON(t, r.body, &acc)
	if acc.JobID != "order-17" || acc.Duplicate {
		t.Fatalf("accepted %s", r.body)
	}
	r = s.do(t, "POST", "/v1/algorithms/language_detection/jobs", french, key)
	mustJSON(t, r.body, &acc)
	if r.StatusCode != 202 || !acc.Duplicate {
		t.Fatalf("second submit with the same key: %d %s, want a duplicate", r.StatusCode, r.body)
	}
	r = s.do(t, "GET", "/v1/jobs/order-17?wait=20s", "", nil)
	var res struct {
		JobID  string          `json:"job_id"`
		Status string          `json:"status"`
		Output json.RawMessage `json:"output"`
	}
	mustJSON(t, r.body, &res)
	if r.StatusCode != 200 || res.Status != "succeeded" || !bytes.Contains(res.Output, []byte(`"fr`)) {
		t.Fatalf("long-poll: %d %s", r.StatusCode, r.body)
	}
	// Ran once: one record, no second job from the duplicate.
	info, err := s.store.Jobs().Info(context.Background())
	if err != nil || info.State.LastSeq != 1 {
		t.Fatalf("JOBS stored %d messages (%v), want 1", info.State.LastSeq, err)
	}

	t.Run("long-poll of a job still running returns when the wait ends", func(t *testing.T) {
		r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{"sleep_ms":2500}`, map[string]string{"Idempotency-Key": "slow"})
		if r.StatusCode != 202 {
			t.Fatalf("submit: %d %s", r.StatusCode, r.body)
		}
		expectProblem(t, s.do(t, "GET", "/v1/jobs/slow?wait=100ms", "", nil), 404)
		r = s.do(t, "GET", "/v1/jobs/slow?wait=30s", "", nil)
		mustJSON(t, r.body, &res)
		if res.Status != "succeeded" {
			t.Fatalf("slow job: %s", r.body)
		}
	})
	errs := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
	}{
		{"unknown job", "GET", "/v1/jobs/never-submitted", "", nil, 404},
		{"invalid job id", "GET", "/v1/jobs/a..b", "", nil, 400},
		{"invalid wait", "GET", "/v1/jobs/order-17?wait=forever", "", nil, 400},
		{"body not JSON", "POST", "/v1/algorithms/probe/jobs", "{", nil, 400},
		{"invalid Idempotency-Key", "POST", "/v1/algorithms/probe/jobs", "{}", map[string]string{"Idempotency-Key": "a b"}, 400},
		{"reserved Idempotency-Key", "POST", "/v1/algorithms/probe/jobs", "{}", map[string]string{"Idempotency-Key": "auto-1-1"}, 400},
		{"invalid algorithm name", "POST", "/v1/algorithms/Bad-Name/jobs", "{}", nil, 404},
		{"unknown route", "GET", "/v2/nothing", "", nil, 404},
		{"wrong method", "PUT", "/v1/jobs/order-17", "", nil, 405},
		{"cancel of a finished job", "DELETE", "/v1/jobs/order-17", "", nil, 409},
		{"GET of a POST route", "GET", "/v1/algorithms/probe/run", "", nil, 405},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			expectProblem(t, s.do(t, tc.method, tc.path, tc.body, tc.hdr), tc.status)
		})
	}
}

func TestDeadLettersReplayAndQueues(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.failing.Store(true)
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, map[string]string{"Idempotency-Key": "doomed", "traceparent": tp})
	if r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	var res struct {
		Status string `json:"status"`
		Error  *struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	mustJSON(t, s.do(t, "GET", "/v1/jobs/doomed?wait=20s", "", nil).body, &res)
	if res.Status != "failed" || res.Error == nil || res.Error.Code != 422 {
		t.Fatalf("job: %+v", res)
	}
	var dead []struct {
		JobID  string          `json:"job_id"`
		Code   int             `json:"code"`
		Reason string          `json:"reason"`
		Body   json.RawMessage `json:"body"`
	}
	mustJSON(t, s.do(t, "GET", "/v1/dead", "", nil).body, &dead)
	if len(dead) != 1 || dead[0].JobID != "doomed" || dead[0].Code != 422 || !strings.Contains(dead[0].Reason, "failing on purpose") || string(dead[0].Body) != "{}" {
		t.Fatalf("dead letters %+v", dead)
	}
	letters, err := s.store.DeadLetters(context.Background(), "probe")
	if err != nil || len(letters) != 1 || letters[0].Header.Get("traceparent") != tp {
		t.Fatalf("the job's traceparent is not kept with it: %v %+v", err, letters)
	}
	var queues []struct {
		Algorithm string `json:"algorithm"`
		Dead      int    `json:"dead"`
		Runners   int    `json:"runners"`
	}
	mustJSON(t, s.do(t, "GET", "/v1/queues", "", nil).body, &queues)
	found := false
	for _, q := range queues {
		if q.Algorithm == "probe" {
			found = q.Dead == 1 && q.Runners == 1
		}
	}
	if !found {
		t.Fatalf("queues %+v: want probe with 1 dead letter and 1 runner", queues)
	}

	s.failing.Store(false)
	r = s.do(t, "POST", "/v1/dead/doomed/replay", "", nil)
	if r.StatusCode != 202 || r.Header.Get("Location") != "/v1/jobs/doomed" {
		t.Fatalf("replay: %d %s", r.StatusCode, r.body)
	}
	eventually(t, func() bool {
		mustJSON(t, s.do(t, "GET", "/v1/jobs/doomed?wait=5s", "", nil).body, &res)
		return res.Status == "succeeded"
	}, "the replayed job succeeds")
	mustJSON(t, s.do(t, "GET", "/v1/dead", "", nil).body, &dead)
	if len(dead) != 0 {
		t.Fatalf("dead letters after replay: %+v", dead)
	}
	expectProblem(t, s.do(t, "POST", "/v1/dead/doomed/replay", "", nil), 404)
	expectProblem(t, s.do(t, "POST", "/v1/dead/a..b/replay", "", nil), 400)
	expectProblem(t, s.do(t, "GET", "/v1/dead?algorithm=Bad-Name", "", nil), 400)
}

func TestEventsRegistrationsDeparturesAndOutcomes(t *testing.T) {
	s := newStack(t, stackOpts{})
	ev := s.openEvents(t)

	stop := s.startRunner(t, runner.Must(runner.NewAlgorithm(runner.Spec{
		Name: "extra", Version: "0.1.0", InputSchema: []byte(`{}`), OutputSchema: []byte(`{}`),
	}, func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })))
	ev.next(t, func(e sseEvent) bool {
		return e.name == gateway.EventRegistered && strings.Contains(e.data, `"algorithm":"extra"`)
	}, "extra registered")
	stop()
	ev.next(t, func(e sseEvent) bool {
		return e.name == gateway.EventDeparted && strings.Contains(e.data, `"algorithm":"extra"`)
	}, "extra departed")

	// A record whose job_id is not its key is corrupt: no event for it.
	if _, err := s.store.Results().Put(context.Background(), "forged", []byte(`{"job_id":"other","algorithm":"probe","status":"succeeded"}`)); err != nil {
		t.Fatal(err)
	}
	r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, map[string]string{"Idempotency-Key": "watched"})
	if r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	e := ev.next(t, func(e sseEvent) bool {
		if e.name == gateway.EventJob && (strings.Contains(e.data, `"other"`) || strings.Contains(e.data, `"forged"`)) {
			t.Fatalf("event for a corrupt record: %s", e.data)
		}
		return e.name == gateway.EventJob && strings.Contains(e.data, `"job_id":"watched"`) && strings.Contains(e.data, `"succeeded"`)
	}, "job watched succeeded")
	var je struct {
		Algorithm string `json:"algorithm"`
		Attempts  int    `json:"attempts"`
	}
	mustJSON(t, []byte(e.data), &je)
	if je.Algorithm != "probe" || je.Attempts != 1 {
		t.Fatalf("job event %s", e.data)
	}
}

// A runner that dies without deregistering leaves when its record expires:
// the departure is an event within the discovery TTL, and the algorithm
// leaves the listing.
func TestEventsDepartureOnExpiry(t *testing.T) {
	s := newStack(t, stackOpts{discoveryTTL: 3 * time.Second, noProbe: true})
	ev := s.openEvents(t)
	rec := discovery.Registration{
		Algorithm: "crashed", Version: "1.0.0", Instance: "dead1", Subject: protocol.SubjectPrefix + "crashed", QueueGroup: "runners",
		InputSchema: json.RawMessage(`{}`), OutputSchema: json.RawMessage(`{}`), TimeoutMS: 1000, MaxConcurrency: 1,
		StartedAt: time.Now().UTC(), HeartbeatAt: time.Now().UTC(),
	}
	if err := s.store.Registry().Register(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	ev.next(t, func(e sseEvent) bool {
		return e.name == gateway.EventRegistered && strings.Contains(e.data, `"crashed"`)
	}, "crashed registered")
	ev.next(t, func(e sseEvent) bool { return e.name == gateway.EventDeparted && strings.Contains(e.data, `"crashed"`) }, "crashed expired")
	s.waitAlgorithms(t, 1) // language_detection, heartbeating, stays
}

func TestOpenAPIFromLiveSchemas(t *testing.T) {
	s := newStack(t, stackOpts{})
	check := func(names ...string) map[string]any {
		r := s.do(t, "GET", "/openapi.json", "", nil)
		var doc struct {
			OpenAPI string                                `json:"openapi"`
			Paths   map[string]map[string]json.RawMessage `json:"paths"`
		}
		mustJSON(t, r.body, &doc)
		if doc.OpenAPI != "3.1.0" {
			t.Fatalf("openapi %q", doc.OpenAPI)
		}
		for _, p := range []string{"/v1/algorithms", "/v1/jobs", "/v1/jobs/{id}", "/v1/dead", "/v1/dead/{id}/replay", "/v1/queues", "/v1/events", "/v1/routes", "/v1/algorithms/{name}/comparisons", "/v1/schedules", "/v1/schedules/{name}", "/healthz", "/readyz"} {
			if doc.Paths[p] == nil {
				t.Errorf("path %s missing", p)
			}
		}
		if doc.Paths["/v1/jobs/{id}"]["delete"] == nil {
			t.Errorf("DELETE /v1/jobs/{id} (cancel) missing")
		}
		regs, err := s.store.Registry().List(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]discovery.Registration{}
		for _, r := range regs {
			byName[r.Algorithm] = r
		}
		for _, name := range names {
			rec, ok := byName[name]
			if !ok {
				t.Fatalf("%s not registered", name)
			}
			var op struct {
				RequestBody struct {
					Content map[string]struct{ Schema json.RawMessage } `json:"content"`
				} `json:"requestBody"`
				Responses map[string]struct {
					Content map[string]struct{ Schema json.RawMessage } `json:"content"`
				} `json:"responses"`
			}
			raw := doc.Paths["/v1/algorithms/"+name+"/run"]["post"]
			if raw == nil {
				t.Fatalf("no run path for %s", name)
			}
			mustJSON(t, raw, &op)
			in := op.RequestBody.Content["application/json"].Schema
			out := op.Responses["200"].Content["application/json"].Schema
			if !sameJSON(t, in, rec.InputSchema) || !sameJSON(t, out, rec.OutputSchema) {
				t.Fatalf("%s: schemas in the document differ from the registration's", name)
			}
			for _, sc := range []json.RawMessage{in, out} {
				c := jsonschema.NewCompiler()
				if err := c.AddResource("s.json", bytes.NewReader(sc)); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Compile("s.json"); err != nil {
					t.Fatalf("%s: schema does not compile: %v", name, err)
				}
			}
			for _, code := range []string{"400", "404", "422", "500", "503", "504"} {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s: no %s response", name, code)
				}
			}
			// The jobs path takes the same input as the run path: its
			// request body is the input schema, never the output's
			// (every algorithm here has two different schemas, so a swap
			// shows).
			raw = doc.Paths["/v1/algorithms/"+name+"/jobs"]["post"]
			if raw == nil {
				t.Fatalf("no jobs path for %s", name)
			}
			var jobs struct {
				RequestBody struct {
					Required bool                                        `json:"required"`
					Content  map[string]struct{ Schema json.RawMessage } `json:"content"`
				} `json:"requestBody"`
				Responses map[string]struct {
					Content map[string]struct{ Schema json.RawMessage } `json:"content"`
				} `json:"responses"`
			}
			mustJSON(t, raw, &jobs)
			if in := jobs.RequestBody.Content["application/json"].Schema; !jobs.RequestBody.Required || in == nil || !sameJSON(t, in, rec.InputSchema) {
				t.Fatalf("%s: jobs request body %s (required %v), want the input schema %s", name, in, jobs.RequestBody.Required, rec.InputSchema)
			}
			if acc := jobs.Responses["202"].Content["application/json"].Schema; acc == nil || !sameJSON(t, acc, []byte(`{"$ref":"#/components/schemas/JobAccepted"}`)) {
				t.Fatalf("%s: jobs 202 answer %s, want JobAccepted", name, acc)
			}
		}
		var all map[string]any
		mustJSON(t, r.body, &all)
		return all["paths"].(map[string]any)
	}
	check("language_detection", "probe")
	stop := s.startRunner(t, runner.Must(runner.NewAlgorithm(runner.Spec{
		Name: "later", Version: "2.0.0", InputSchema: []byte(`{"type":"object","properties":{"x":{"type":"number"}}}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(context.Context, struct{}) (struct{}, error) { return struct{}{}, nil })))
	s.waitAlgorithms(t, 3)
	check("language_detection", "probe", "later")
	stop()
	s.waitAlgorithms(t, 2)
	if paths := check("language_detection", "probe"); paths["/v1/algorithms/later/run"] != nil {
		t.Fatal("a departed algorithm is still in the document")
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	mustJSON(t, a, &x)
	mustJSON(t, b, &y)
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

func TestTokenRequiredOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "192.0.2.10:80", "[::]:8080"} {
		_, err := gateway.New(nil, nil, gateway.Config{Addr: addr})
		if !errors.Is(err, gateway.ErrTokenRequired) {
			t.Errorf("%s without a token: %v, want ErrTokenRequired", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:8080", "localhost:0", "[::1]:8080"} {
		if err := (gateway.Config{Addr: addr}).Validate(); err != nil {
			t.Errorf("%s: %v", addr, err)
		}
	}

	s := newStack(t, stackOpts{token: "s3cret"})
	s.token = ""
	expectProblem(t, s.do(t, "GET", "/v1/queues", "", nil), 401)
	expectProblem(t, s.do(t, "GET", "/v1/queues", "", map[string]string{"Authorization": "Bearer s3cre"}), 401)
	expectProblem(t, s.do(t, "POST", "/v1/algorithms/probe/run", "{}", map[string]string{"Authorization": "Bearer wrong!"}), 401)
	expectProblem(t, s.do(t, "GET", "/metrics", "", nil), 401)
	if r := s.do(t, "GET", "/v1/queues", "", map[string]string{"Authorization": "Bearer s3cret"}); r.StatusCode != 200 {
		t.Fatalf("with the token: %d %s", r.StatusCode, r.body)
	}
	if r := s.do(t, "GET", "/v1/queues", "", map[string]string{"Cookie": "pnp_token=s3cret"}); r.StatusCode != 200 {
		t.Fatalf("with the cookie: %d %s", r.StatusCode, r.body)
	}
	for _, open := range []string{"/healthz", "/readyz", "/", "/docs"} {
		if r := s.do(t, "GET", open, "", nil); r.StatusCode != 200 {
			t.Errorf("%s without token: %d", open, r.StatusCode)
		}
	}
}

func TestOversizedBodyRefused(t *testing.T) {
	s := newStack(t, stackOpts{maxPayload: 64 << 10})
	big := `{"text":"` + strings.Repeat("a", 70<<10) + `"}`
	expectProblem(t, s.do(t, "POST", "/v1/algorithms/language_detection/run", big, nil), 413)
	expectProblem(t, s.do(t, "POST", "/v1/algorithms/language_detection/jobs", big, nil), 413)
	// Under the max payload but over what a job may carry with the
	// pipeline's headers: the store's own limit, also a 413.
	mid := `{"text":"` + strings.Repeat("a", 60<<10) + `"}`
	expectProblem(t, s.do(t, "POST", "/v1/algorithms/language_detection/jobs", mid, nil), 413)
	// Far over: refused after reading the limit, not after reading it all
	// (NATS would refuse it too, after the gateway held it in memory).
	huge := strings.Repeat(" ", 8<<20)
	for _, path := range []string{"/v1/algorithms/language_detection/run", "/v1/algorithms/language_detection/jobs"} {
		p := expectProblem(t, s.do(t, "POST", path, huge, nil), 413)
		if !strings.Contains(p.Message, "body over the limit of 65536 bytes") {
			t.Fatalf("%s: %q, want the gateway's own body limit", path, p.Message)
		}
	}
}

// The routes that wait on purpose outlive the server's write timeout: a
// run, a long-poll and the event stream each move their write deadline.
func TestWaitingRoutesOutliveTheWriteTimeout(t *testing.T) {
	s := newStack(t, stackOpts{writeTimeout: 300 * time.Millisecond})
	ev := s.openEvents(t)
	r := s.do(t, "POST", "/v1/algorithms/probe/run", `{"sleep_ms":1000}`, nil)
	if r.StatusCode != 200 {
		t.Fatalf("run of 1 s with a 300 ms write timeout: %d %s", r.StatusCode, r.body)
	}
	if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{"sleep_ms":1000}`, map[string]string{"Idempotency-Key": "patient"}); r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	r = s.do(t, "GET", "/v1/jobs/patient?wait=20s", "", nil)
	if r.StatusCode != 200 || !strings.Contains(string(r.body), "succeeded") {
		t.Fatalf("long-poll of 1 s with a 300 ms write timeout: %d %s", r.StatusCode, r.body)
	}
	ev.next(t, func(e sseEvent) bool { return e.name == gateway.EventJob && strings.Contains(e.data, `"patient"`) }, "job event after the write timeout")
}

func TestHealthReadyAndPages(t *testing.T) {
	s := newStack(t, stackOpts{})
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := s.do(t, "GET", p, "", nil); r.StatusCode != 200 {
			t.Fatalf("%s: %d %s", p, r.StatusCode, r.body)
		}
	}
	for _, p := range []string{"/", "/docs", "/web/app.js", "/web/style.css"} {
		r := s.do(t, "GET", p, "", nil)
		if r.StatusCode != 200 || len(r.body) == 0 || !strings.Contains(r.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Fatalf("%s: %d, %d bytes, CSP %q", p, r.StatusCode, len(r.body), r.Header.Get("Content-Security-Policy"))
		}
		if r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("%s: CORS header without CORS configured", p)
		}
	}
	expectProblem(t, s.do(t, "GET", "/web/nothing.js", "", nil), 404)
	s.gwNC.Close()
	expectProblem(t, s.do(t, "GET", "/readyz", "", nil), 503)
}

func TestMetricsCountRequestsByRouteAndCode(t *testing.T) {
	s := newStack(t, stackOpts{})
	for range 3 {
		s.do(t, "POST", "/v1/algorithms/language_detection/run", french, nil)
	}
	s.do(t, "POST", "/v1/algorithms/language_detection/run", `{"text":42}`, nil)
	r := s.do(t, "GET", "/metrics", "", nil)
	if r.StatusCode != 200 {
		t.Fatalf("metrics: %d", r.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("parse exposition: %v", err)
	}
	const route = "POST /v1/algorithms/{name}/run"
	count := func(code string) float64 {
		for _, m := range fams["pnp_gateway_http_requests_total"].GetMetric() {
			if label(m, "route") == route && label(m, "code") == code {
				return m.GetCounter().GetValue()
			}
		}
		return 0
	}
	if count("200") != 3 || count("400") != 1 {
		t.Fatalf("requests_total: 200=%v 400=%v, want 3 and 1", count("200"), count("400"))
	}
	var samples uint64
	for _, m := range fams["pnp_gateway_http_request_duration_seconds"].GetMetric() {
		if label(m, "route") == route {
			samples = m.GetHistogram().GetSampleCount()
		}
	}
	if samples != 4 {
		t.Fatalf("duration histogram has %d samples for %s, want 4", samples, route)
	}
	// docs/METRICS.md names exactly the gateway's metrics.
	doc, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	for _, m := range regexp.MustCompile(`pnp_gateway_[a-z_]+[a-z]`).FindAllString(string(doc), -1) {
		named[m] = true
		if fams[m] == nil {
			t.Errorf("docs/METRICS.md names %s, which the gateway does not export", m)
		}
	}
	for m := range fams {
		if strings.HasPrefix(m, "pnp_gateway_") && !named[m] {
			t.Errorf("docs/METRICS.md does not document %s", m)
		}
	}
	// The gateway registered in the registry it was given.
	if _, err := gateway.New(s.nc, s.store, gateway.Config{Metrics: s.metrics}); err == nil {
		t.Fatal("a second gateway on the same registry: no error")
	}
	var _ prometheus.Gatherer = s.metrics
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestCORSOnlyForTheConfiguredOrigin(t *testing.T) {
	s := newStack(t, stackOpts{noProbe: true})
	gw, err := gateway.New(s.srv.Connect(), s.store, gateway.Config{CORSOrigin: "https://app.example"})
	if err != nil {
		t.Fatal(err)
	}
	h := gw.Handler()
	for origin, want := range map[string]string{"https://app.example": "https://app.example", "https://evil.example": ""} {
		req, _ := http.NewRequest("OPTIONS", "/v1/algorithms/x/run", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		w := &recorder{h: http.Header{}}
		h.ServeHTTP(w, req)
		if got := w.h.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("origin %s: allow-origin %q, want %q", origin, got, want)
		}
	}
}

type recorder struct {
	h    http.Header
	code int
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With a route naming a shadow, runs through the gateway also run on the
// shadow version, in the background: callers get the stable version's
// answer, and COMPARE gets a comparison per run, unequal exactly where
// the shadow answers differently.
func TestRunsAreShadowed(t *testing.T) {
	s := newStack(t, stackOpts{})
	candidate, err := runner.NewAlgorithm(runner.Spec{
		Name: "probe", Version: "2.0.0",
		InputSchema: []byte(probeInputSchema), OutputSchema: []byte(probeOutputSchema),
		Timeout: 3 * time.Second, MaxConcurrency: 64,
	}, func(ctx context.Context, in probeIn) (probeOut, error) {
		return probeOut{OK: in.SleepMS != 7}, nil // differs when sleep_ms is 7
	})
	if err != nil {
		t.Fatal(err)
	}
	s.startRunner(t, candidate)
	js, _ := jetstream.New(s.nc)
	ctx := context.Background()
	routes, err := rollout.Provision(ctx, js, rollout.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := routes.Set(ctx, rollout.Route{Algorithm: "probe", Stable: "1.2.0", Shadow: "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	run := func(body string) {
		t.Helper()
		r := s.do(t, "POST", "/v1/algorithms/probe/run", body, nil)
		if r.StatusCode != 200 || string(r.body) != `{"ok":true}` {
			t.Fatalf("run %s: %d %s; want the stable version's answer", body, r.StatusCode, r.body)
		}
	}
	// The route is in force once 2.0.0 has left the plain queue group and
	// the gateway shadows runs.
	natstest.Eventually(t, 10*time.Second, func() bool {
		return s.srv.QueueSubscribers(protocol.SubjectPrefix+"probe", runner.DefaultQueueGroup) == 1
	}, "2.0.0 is still in the queue group of plain runs")
	// One run at a time, each given a second to be shadowed, so that the
	// shadow slots never fill up.
	natstest.Eventually(t, 20*time.Second, func() bool {
		run(`{}`)
		deadline := time.Now().Add(time.Second)
		for s.gw.ShadowCounts().Compared == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		return s.gw.ShadowCounts().Compared > 0
	}, "no run was shadowed: %+v", s.gw.ShadowCounts())
	const n = 5
	for range n {
		r := s.do(t, "POST", "/v1/algorithms/probe/run", `{"sleep_ms":7}`, nil)
		if r.StatusCode != 200 || string(r.body) != `{"ok":true}` || r.Header.Get("Pnp-Version") != "1.2.0" {
			t.Fatalf("run: %d %s from %q; want the stable version's answer", r.StatusCode, r.body, r.Header.Get("Pnp-Version"))
		}
	}
	var cs []rollout.Comparison
	differ := 0
	natstest.Eventually(t, 10*time.Second, func() bool {
		cs, err = rollout.ReadComparisons(ctx, js, "probe", time.Time{}, 0)
		differ = 0
		for _, c := range cs {
			if !c.Equal {
				differ++
			}
		}
		return err == nil && differ == n
	}, "%d comparisons differ, want %d (%v, %+v)", differ, n, err, s.gw.ShadowCounts())
	for _, c := range cs {
		if c.Source != rollout.SourceShadow || c.StableVersion != "1.2.0" || c.CandidateVersion != "2.0.0" || c.JobID != "" || c.StableError != "" || c.CandidateError != "" {
			t.Errorf("comparison %+v", c)
		}
		if !c.Equal && (len(c.Diffs) != 1 || c.Diffs[0].Pointer != "/ok") {
			t.Errorf("diffs %+v, want /ok", c.Diffs)
		}
	}
	// Every shadow run that started is done once it is counted.
	natstest.Eventually(t, 10*time.Second, func() bool {
		n := s.gw.ShadowCounts()
		return n.Started == n.Compared+n.StoreFailed+n.NotCompared
	}, "shadow runs still in flight: %+v", s.gw.ShadowCounts())
	cs, err = rollout.ReadComparisons(ctx, js, "probe", time.Time{}, 0)
	if got := s.gw.ShadowCounts(); err != nil || got.Compared != int64(len(cs)) || got.Dropped != 0 || got.StoreFailed != 0 || got.NotCompared != 0 {
		t.Errorf("counts %+v, want %d compared (%v)", got, len(cs), err)
	}

	// The routes and the report, over HTTP.
	var routesList []rollout.Route
	mustJSON(t, s.do(t, "GET", "/v1/routes", "", nil).body, &routesList)
	if len(routesList) != 1 || routesList[0].Algorithm != "probe" || routesList[0].Stable != "1.2.0" || routesList[0].Shadow != "2.0.0" {
		t.Errorf("GET /v1/routes: %+v", routesList)
	}
	var rep rollout.Report
	r := s.do(t, "GET", "/v1/algorithms/probe/comparisons?last=100", "", nil)
	mustJSON(t, r.body, &rep)
	if r.StatusCode != 200 || rep.Total != len(cs) || rep.Agree != len(cs)-n || len(rep.Fields) != 1 || rep.Fields[0].Pointer != "/ok" || rep.Fields[0].Count != n {
		t.Errorf("report: %d %+v; want %d compared, %d agreeing, /ok differing %d times", r.StatusCode, rep, len(cs), len(cs)-n, n)
	}
	mustJSON(t, s.do(t, "GET", "/v1/algorithms/probe/comparisons?last=1", "", nil).body, &rep)
	if rep.Total != 1 {
		t.Errorf("report of the last 1: %+v", rep)
	}
	for candidate, want := range map[string]int{"2.0.0": len(cs), "9.9.9": 0} {
		mustJSON(t, s.do(t, "GET", "/v1/algorithms/probe/comparisons?candidate="+candidate, "", nil).body, &rep)
		if rep.Total != want {
			t.Errorf("report of candidate %s: %+v; want %d compared", candidate, rep, want)
		}
	}
	expectProblem(t, s.do(t, "GET", "/v1/algorithms/probe/comparisons?last=0", "", nil), 400)
	mustJSON(t, s.do(t, "GET", "/v1/algorithms/nothing/comparisons", "", nil).body, &rep)
	if rep.Total != 0 || rep.Algorithm != "nothing" {
		t.Errorf("report of an algorithm without comparisons: %+v", rep)
	}
}

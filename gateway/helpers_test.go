package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/gateway"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// probeIn drives the probe algorithm: code makes it fail with that code,
// sleep_ms makes it wait (until its deadline, for a 504).
type probeIn struct {
	Code    int `json:"code,omitempty"`
	SleepMS int `json:"sleep_ms,omitempty"`
}

type probeOut struct {
	OK bool `json:"ok"`
}

const probeInputSchema = `{"type":"object","additionalProperties":false,
 "properties":{"code":{"type":"integer"},"sleep_ms":{"type":"integer","minimum":0}}}`
const probeOutputSchema = `{"type":"object","required":["ok"],"properties":{"ok":{"type":"boolean"}}}`

// probe is a test algorithm whose replies the test chooses. While
// failing is set, every call fails with 422 (for dead letters that a
// replay can then turn into a success).
func probe(t testing.TB, failing *atomic.Bool) *runner.Algorithm {
	t.Helper()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "probe", Version: "1.2.0", Description: "answers as the test asks",
		InputSchema: []byte(probeInputSchema), OutputSchema: []byte(probeOutputSchema),
		Timeout: 3 * time.Second, MaxConcurrency: 64,
	}, func(ctx context.Context, in probeIn) (probeOut, error) {
		if failing != nil && failing.Load() {
			return probeOut{}, protocol.Reject("failing on purpose")
		}
		if in.SleepMS > 0 {
			select {
			case <-time.After(time.Duration(in.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				return probeOut{}, ctx.Err()
			}
		}
		if in.Code != 0 {
			return probeOut{}, protocol.Errorf(in.Code, "asked for %d", in.Code)
		}
		return probeOut{OK: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// stack is one test's NATS, controller, runners and gateway.
type stack struct {
	srv     *natstest.Server
	nc      *nats.Conn
	gwNC    *nats.Conn
	store   *jobs.Store
	gw      *gateway.Gateway
	url     string
	token   string
	metrics *prometheus.Registry
	failing atomic.Bool
}

type stackOpts struct {
	maxPayload int32
	token      string
	maxJobAge  time.Duration
	noProbe    bool
	// writeTimeout is the gateway's server write timeout (default 30 s).
	writeTimeout time.Duration
	// discoveryTTL is the discovery bucket's max age (default 15 s).
	discoveryTTL time.Duration
	// maxUpload, maxUploads, maxEventStreams and uploadMinRate are the
	// gateway's (default: gateway.Config's defaults).
	maxUpload       int64
	maxUploads      int
	maxEventStreams int
	uploadMinRate   int64
}

// newStack starts NATS, a controller, a runner serving language_detection
// and probe, and a gateway on a loopback port.
func newStack(t testing.TB, o stackOpts) *stack {
	t.Helper()
	var opts []natstest.Option
	if o.maxPayload > 0 {
		opts = append(opts, natstest.MaxPayload(o.maxPayload))
	}
	s := &stack{srv: natstest.Start(t, opts...), token: o.token, metrics: prometheus.NewRegistry()}
	s.nc = s.srv.Connect()
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.store, err = jobs.Provision(ctx, js, jobs.StoreConfig{Discovery: discovery.Config{TTL: o.discoveryTTL}})
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := controller.New(s.srv.Connect(), controller.Config{MaxJobAge: o.maxJobAge})
	if err != nil {
		t.Fatal(err)
	}
	background(t, ctl.Run)
	select {
	case <-ctl.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("controller not ready")
	}
	algs := []*runner.Algorithm{runner.Must(languagedetection.New())}
	if !o.noProbe {
		algs = append(algs, probe(t, &s.failing))
	}
	s.startRunner(t, algs...)

	s.gwNC = s.srv.Connect()
	s.gw, err = gateway.New(s.gwNC, s.store, gateway.Config{Token: o.token, Metrics: s.metrics, Logger: zerolog.Nop(), WriteTimeout: o.writeTimeout,
		MaxUpload: o.maxUpload, MaxUploads: o.maxUploads, MaxEventStreams: o.maxEventStreams, UploadMinRate: o.uploadMinRate})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.url = "http://" + ln.Addr().String()
	background(t, func(ctx context.Context) error { return s.gw.Serve(ctx, ln) })
	<-s.gw.Ready()
	s.waitAlgorithms(t, len(algs))
	return s
}

// startRunner serves algs in a runner of its own; the returned func stops
// it (gracefully: it deregisters) and waits.
func (s *stack) startRunner(t testing.TB, algs ...*runner.Algorithm) func() {
	t.Helper()
	r, err := runner.New(s.srv.Connect(), algs, runner.WithDrainTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stop := background(t, r.Run)
	select {
	case <-r.Started():
	case <-time.After(10 * time.Second):
		t.Fatal("runner did not start")
	}
	return stop
}

// background runs fn until the test ends (or the returned stop is called)
// and reports its error.
func background(t testing.TB, fn func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("background: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// waitAlgorithms waits until the gateway lists n algorithms.
func (s *stack) waitAlgorithms(t testing.TB, n int) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() bool {
		var algs []map[string]any
		resp := s.do(t, "GET", "/v1/algorithms", "", nil)
		_ = json.Unmarshal(resp.body, &algs)
		return len(algs) == n
	}, "gateway lists %d algorithms", n)
}

// response is an HTTP response with its body read.
type response struct {
	*http.Response
	body []byte
}

// do sends a request with the stack's token (if any) and extra headers.
func (s *stack) do(t testing.TB, method, path, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{resp, b}
}

// problemBody is the problem+json document of an error.
type problemBody struct {
	Status     int    `json:"status"`
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Algorithm  string `json:"algorithm"`
	Violations []struct {
		Pointer string `json:"pointer"`
		Message string `json:"message"`
	} `json:"violations"`
	// raw is the whole body, for fields of one route's problems.
	raw []byte
}

// expectProblem checks an error response: its status, content type and
// a problem body with the same code.
func expectProblem(t *testing.T, r response, status int) problemBody {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: content type %q, want application/problem+json", r.Request.URL.Path, ct)
	}
	var p problemBody
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body %s: %v", r.body, err)
	}
	if p.Status != status || p.Code != status || p.Message == "" {
		t.Fatalf("problem %+v: want status and code %d and a message", p, status)
	}
	p.raw = r.body
	return p
}

// sse reads Server-Sent Events from a stream.
type sse struct {
	resp   *http.Response
	events chan sseEvent
}

type sseEvent struct {
	name string
	data string
}

// openEvents connects to /v1/events and reads events in the background.
func (s *stack) openEvents(t *testing.T) *sse {
	t.Helper()
	req, err := http.NewRequest("GET", s.url+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	e := &sse{resp: resp, events: make(chan sseEvent, 1024)}
	t.Cleanup(func() { resp.Body.Close() })
	connected := make(chan struct{})
	go func() {
		defer close(e.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		first := true
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, ": connected") && first:
				first = false
				close(connected)
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			case line == "" && ev.name != "":
				e.events <- ev
				ev = sseEvent{}
			}
		}
	}()
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("event stream did not start")
	}
	return e
}

// next returns the first event for which match is true, within 15 s.
func (e *sse) next(t *testing.T, match func(sseEvent) bool, what string) sseEvent {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev, ok := <-e.events:
			if !ok {
				t.Fatalf("event stream ended before %s", what)
			}
			if match(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no event: %s", what)
		}
	}
}

func mustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

var _ = fmt.Sprint

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/santhosh-tekuri/jsonschema/v5"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// AlgorithmName is the algorithm both responders serve, on
// protocol.SubjectPrefix + AlgorithmName.
const AlgorithmName = "bench_word_count"

// InputSchema and OutputSchema are the JSON Schemas both responders check
// requests (and, unless Config.SkipOutputCheck, replies) against.
const (
	InputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "bench_word_count input",
  "type": "object",
  "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 100000}
  },
  "required": ["text"],
  "additionalProperties": false
}`
	OutputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "bench_word_count output",
  "type": "object",
  "properties": {
    "words": {"type": "integer", "minimum": 0}
  },
  "required": ["words"],
  "additionalProperties": false
}`
)

// Input is the request body of the benchmark algorithm.
type Input struct {
	Text string `json:"text"`
}

// Output is the reply body of the benchmark algorithm.
type Output struct {
	Words int `json:"words"`
}

// WordCount is the benchmark's algorithm: trivial on purpose, so that what
// is measured is the serving machinery around it.
func WordCount(_ context.Context, in Input) (Output, error) {
	return Output{Words: len(strings.Fields(in.Text))}, nil
}

// NewAlgorithm returns the benchmark algorithm for the runner, with
// maxConcurrency requests at once (0: the runner's default).
func NewAlgorithm(maxConcurrency int) (*runner.Algorithm, error) {
	return runner.NewAlgorithm(runner.Spec{
		Name:           AlgorithmName,
		Version:        "1.0.0",
		Description:    "Counts the words of a text; used by pnp bench.",
		InputSchema:    []byte(InputSchema),
		OutputSchema:   []byte(OutputSchema),
		MaxConcurrency: maxConcurrency,
	}, WordCount)
}

// Payloads returns the request bodies the benchmark sends, in turn: sixteen
// texts of 20 to about 300 bytes, every one valid.
func Payloads() [][]byte {
	words := strings.Fields(`the quick brown fox jumps over the lazy dog while a plug and play
		runner answers requests over nats with validated json in and out again`)
	out := make([][]byte, 0, 16)
	for i := range 16 {
		n := 3 + i*3
		var sb strings.Builder
		for j := range n {
			if j > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(words[(i+j)%len(words)])
		}
		b, err := json.Marshal(Input{Text: sb.String()})
		if err != nil {
			panic(err) // a string always encodes
		}
		out = append(out, b)
	}
	return out
}

// responder is one side of the comparison: it serves the algorithm on nc
// until stop is called.
type responder struct {
	name  string
	start func(ctx context.Context, nc *nats.Conn) (stop func() error, err error)
}

// Names of the responders, as they appear in reports.
const (
	Handwritten   = "handwritten"
	Runner        = "runner"
	RunnerMetrics = "runner+metrics"
	Echo          = "echo"
)

// echoResponder is the floor under any responder: one nats.go queue
// subscription whose callback answers each request with its own body.
// It decodes, validates and computes nothing, keeps no deadline and sends
// no headers; what the runner costs beyond it is everything a runner does.
func echoResponder() responder {
	return responder{name: Echo, start: func(_ context.Context, nc *nats.Conn) (func() error, error) {
		subject := protocol.SubjectPrefix + AlgorithmName
		sub, err := nc.QueueSubscribe(subject, runner.DefaultQueueGroup, func(m *nats.Msg) { _ = m.Respond(m.Data) })
		if err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		if err := nc.Flush(); err != nil {
			_ = sub.Unsubscribe()
			return nil, fmt.Errorf("flush: %w", err)
		}
		return sub.Unsubscribe, nil
	}}
}

// handwritten is what a careful author would write without the runner
// library: one queue subscription delivering into a channel, workers
// goroutines taking requests from it, each doing what the runner does for
// a request (decode, validate against the compiled schema, unmarshal into
// the typed input, call, marshal, optionally validate the output,
// respond) and nothing else: no deadlines, no stats, no panic recovery.
type handwritten struct {
	input, output *jsonschema.Schema
	checkOutput   bool
	workers       int
	queue         string
	subject       string
}

func newHandwritten(workers int, checkOutput bool) (*handwritten, error) {
	in, err := schemas.CompileBytes(AlgorithmName+".input.json", []byte(InputSchema))
	if err != nil {
		return nil, err
	}
	out, err := schemas.CompileBytes(AlgorithmName+".output.json", []byte(OutputSchema))
	if err != nil {
		return nil, err
	}
	return &handwritten{
		input:       in,
		output:      out,
		checkOutput: checkOutput,
		workers:     workers,
		queue:       runner.DefaultQueueGroup,
		subject:     protocol.SubjectPrefix + AlgorithmName,
	}, nil
}

func (h *handwritten) start(_ context.Context, nc *nats.Conn) (func() error, error) {
	// The channel only has to hold what the load generator keeps in flight;
	// a full channel would make nats.go drop messages as a slow consumer.
	ch := make(chan *nats.Msg, 4096)
	sub, err := nc.ChanQueueSubscribe(h.subject, h.queue, ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", h.subject, err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("flush: %w", err)
	}
	var wg sync.WaitGroup
	for range h.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range ch {
				h.handle(m)
			}
		}()
	}
	return func() error {
		err := sub.Unsubscribe()
		close(ch)
		wg.Wait()
		return err
	}, nil
}

func (h *handwritten) handle(m *nats.Msg) {
	v, err := schemas.DecodeJSON(m.Data)
	if err != nil {
		respondError(m, protocol.CodeInvalidInput, "malformed JSON: "+err.Error())
		return
	}
	if err := h.input.Validate(v); err != nil {
		respondError(m, protocol.CodeInvalidInput, "input does not match the schema")
		return
	}
	var in Input
	if err := json.Unmarshal(m.Data, &in); err != nil {
		respondError(m, protocol.CodeInvalidInput, "input does not fit the algorithm's type")
		return
	}
	out, err := WordCount(context.Background(), in)
	if err != nil {
		respondError(m, protocol.CodeInternal, "internal error")
		return
	}
	data, err := json.Marshal(out)
	if err != nil {
		respondError(m, protocol.CodeInternal, "internal error")
		return
	}
	if h.checkOutput {
		v, err := schemas.DecodeJSON(data)
		if err == nil {
			err = h.output.Validate(v)
		}
		if err != nil {
			respondError(m, protocol.CodeInternal, "output does not match the schema")
			return
		}
	}
	_ = m.Respond(data)
}

func respondError(m *nats.Msg, code int, message string) {
	body, _ := json.Marshal(protocol.Error{Code: code, Message: message, Algorithm: AlgorithmName})
	_ = m.RespondMsg(&nats.Msg{
		Header: nats.Header{
			protocol.HeaderErrorCode: []string{strconv.Itoa(code)},
			protocol.HeaderError:     []string{message},
		},
		Data: body,
	})
}

// runnerResponder serves the algorithm with the runner library, configured
// as a runner's main would, and returns once it is registered. With
// metrics, the runner records Prometheus metrics in a fresh registry, and
// stopping checks that they counted the requests served.
func runnerResponder(alg *runner.Algorithm, checkOutput bool, log zerolog.Logger, metrics bool) responder {
	name := Runner
	if metrics {
		name = RunnerMetrics
	}
	return responder{name: name, start: func(ctx context.Context, nc *nats.Conn) (func() error, error) {
		opts := []runner.Option{
			runner.WithLogger(log),
			runner.WithDrainTimeout(10 * time.Second),
		}
		if !checkOutput {
			opts = append(opts, runner.WithoutOutputValidation())
		}
		var reg *prometheus.Registry
		if metrics {
			reg = prometheus.NewRegistry()
			opts = append(opts, runner.WithMetrics(reg))
		}
		r, err := runner.New(nc, []*runner.Algorithm{alg}, opts...)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- r.Run(rctx) }()
		select {
		case <-r.Started():
		case err := <-errc:
			cancel()
			if err == nil {
				err = errors.New("runner stopped before it started")
			}
			return nil, err
		}
		if err := nc.Flush(); err != nil {
			cancel()
			<-errc
			return nil, fmt.Errorf("flush: %w", err)
		}
		return func() error {
			cancel()
			if err := <-errc; err != nil {
				return err
			}
			if reg != nil {
				return checkCounted(reg)
			}
			return nil
		}, nil
	}}
}

// checkCounted makes sure a measured runner+metrics round really recorded
// its requests: a metrics path that silently did nothing would look free.
func checkCounted(reg *prometheus.Registry) error {
	fams, err := reg.Gather()
	if err != nil {
		return fmt.Errorf("gather metrics: %w", err)
	}
	var requests, observed float64
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "pnp_runner_requests_total":
				requests += m.GetCounter().GetValue()
			case "pnp_runner_request_duration_seconds":
				observed += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	if requests == 0 || observed != requests {
		return fmt.Errorf("metrics counted %g requests and observed %g latencies: want the same, above 0", requests, observed)
	}
	return nil
}

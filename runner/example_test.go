package runner_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/embedded"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// An algorithm is a typed function plus its JSON Schemas; a runner serves a
// list of them. Any NATS client can then call it on run.<name>.
func ExampleNew() {
	// A NATS server with JetStream, here embedded; normally a real one.
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()

	type Input struct {
		Text string `json:"text"`
	}
	type Output struct {
		Words int `json:"words"`
	}
	wordCount, err := runner.NewAlgorithm(runner.Spec{
		Name:         "word_count",
		Version:      "1.0.0",
		Description:  "Counts the words of a text.",
		InputSchema:  []byte(`{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["words"],"properties":{"words":{"type":"integer"}}}`),
	}, func(ctx context.Context, in Input) (Output, error) {
		if strings.TrimSpace(in.Text) == "" {
			return Output{}, runner.Reject("text is blank")
		}
		return Output{Words: len(strings.Fields(in.Text))}, nil
	})
	if err != nil {
		panic(err)
	}

	r, err := runner.New(nc, []*runner.Algorithm{wordCount})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Started()

	for _, body := range []string{`{"text":"plug and play"}`, `{"text":"   "}`, `{"text":7}`} {
		reply, err := nc.Request("run.word_count", []byte(body), 5*time.Second)
		if err != nil {
			panic(err)
		}
		if e := protocol.ReplyError(reply); e != nil {
			fmt.Println(e.Code, e.Message, e.Violations)
			continue
		}
		fmt.Println(string(reply.Data))
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// {"words":3}
	// 422 text is blank []
	// 400 input does not match the schema [/text: expected string, but got number]
	// <nil>
}

// A batch algorithm gets the inputs of concurrent requests in one call;
// each caller still gets its own reply.
func ExampleNewBatchAlgorithm() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()

	type Input struct {
		N int `json:"n"`
	}
	type Output struct {
		Square int `json:"square"`
	}
	squares, err := runner.NewBatchAlgorithm(runner.Spec{
		Name:         "square",
		Version:      "1.0.0",
		InputSchema:  []byte(`{"type":"object","required":["n"],"properties":{"n":{"type":"integer"}}}`),
		OutputSchema: []byte(`{"type":"object","required":["square"],"properties":{"square":{"type":"integer"}}}`),
		MaxBatch:     8,
		MaxWait:      50 * time.Millisecond,
	}, func(ctx context.Context, ins []Input) ([]Output, error) {
		outs := make([]Output, len(ins))
		errs := make(runner.BatchErrors, len(ins))
		for i, in := range ins {
			if in.N < 0 {
				errs[i] = runner.Reject("negative numbers are not squared here")
				continue
			}
			outs[i] = Output{Square: in.N * in.N}
		}
		return outs, errs
	})
	if err != nil {
		panic(err)
	}
	r, _ := runner.New(nc, []*runner.Algorithm{squares})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Started()

	// Three callers at once: one batch, three replies.
	replies := make([]chan *nats.Msg, 3)
	for i, body := range []string{`{"n":3}`, `{"n":-1}`, `{"n":12}`} {
		replies[i] = make(chan *nats.Msg, 1)
		go func() {
			m, _ := nc.Request("run.square", []byte(body), 5*time.Second)
			replies[i] <- m
		}()
	}
	for _, ch := range replies {
		m := <-ch
		if e := protocol.ReplyError(m); e != nil {
			fmt.Println(e.Code, e.Message)
			continue
		}
		fmt.Println(string(m.Data))
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// {"square":9}
	// 422 negative numbers are not squared here
	// {"square":144}
	// <nil>
}

// Left out of the Spec, the schemas are derived from the function's types;
// struct tags add what the types cannot say.
func ExampleSchemaFor() {
	type Input struct {
		Text  string `json:"text" jsonschema:"minLength=1,maxLength=100000"`
		Limit *int   `json:"limit,omitempty" jsonschema:"minimum=1"`
	}
	schema, err := runner.SchemaFor[Input]()
	if err != nil {
		panic(err)
	}
	fmt.Println(string(schema))

	alg, err := runner.NewAlgorithm(runner.Spec{Name: "word_count", Version: "1.0.0"},
		func(ctx context.Context, in Input) (int, error) { return len(strings.Fields(in.Text)), nil })
	if err != nil {
		panic(err)
	}
	fmt.Println(alg.ValidateInput([]byte(`{"text":"plug and play","limt":3}`)).(*runner.Error).Violations)
	// Output:
	// {"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"text":{"type":"string","maxLength":100000,"minLength":1},"limit":{"type":"integer","minimum":1}},"additionalProperties":false,"type":"object","required":["text"]}
	// [/: additionalProperties 'limt' not allowed]
}

// An algorithm reports how far a job got with Progress; the reports go out
// on progress.<algorithm>, where the controller that holds the job stores
// them in the job's record. Here a subscriber shows them. A request
// without a job id (nats req) reports nothing.
func ExampleProgress() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL())
	defer nc.Close()

	type Input struct {
		Pages int `json:"pages"`
	}
	type Output struct {
		Done int `json:"done"`
	}
	scan, err := runner.NewAlgorithm(runner.Spec{
		Name:         "scan",
		Version:      "1.0.0",
		InputSchema:  []byte(`{"type":"object","required":["pages"],"properties":{"pages":{"type":"integer","minimum":1}}}`),
		OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in Input) (Output, error) {
		for p := 1; p <= in.Pages; p++ {
			// ... scan page p ...
			if err := runner.Progress(ctx, float64(p)/float64(in.Pages), fmt.Sprintf("page %d of %d", p, in.Pages)); err != nil {
				return Output{}, err
			}
			time.Sleep(runner.ProgressInterval) // one report per interval goes out
		}
		return Output{Done: in.Pages}, nil
	})
	if err != nil {
		panic(err)
	}
	r, err := runner.New(nc, []*runner.Algorithm{scan})
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Started()

	reports, _ := nc.SubscribeSync(protocol.ProgressSubject("scan"))
	req := &nats.Msg{Subject: "run.scan", Data: []byte(`{"pages":2}`), Header: nats.Header{protocol.HeaderJobID: []string{"scan-1"}}}
	if _, err := nc.RequestMsg(req, 5*time.Second); err != nil {
		panic(err)
	}
	for range 2 {
		m, err := reports.NextMsg(5 * time.Second)
		if err != nil {
			panic(err)
		}
		p, _ := protocol.DecodeProgress(m.Data)
		fmt.Println(p.JobID, p.Fraction, p.Message)
	}
	stop()
	fmt.Println(<-done)
	// Output:
	// scan-1 0.5 page 1 of 2
	// scan-1 1 page 2 of 2
	// <nil>
}

package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

const numSchema = `{"type":"object","required":["n"],"properties":{"n":{"type":"integer"},"mode":{"type":"string"}}}`
const doubledSchema = `{"type":"object","required":["doubled"],"properties":{"doubled":{"type":"integer"}}}`

type numIn struct {
	N    int    `json:"n"`
	Mode string `json:"mode"`
}
type numOut struct {
	Doubled int `json:"doubled"`
}

// doubler is a batch algorithm that doubles n, rejects mode "reject" per
// item, and panics on mode "panic"; calls counts its calls.
func doubler(t *testing.T, calls *atomic.Int64, mutate func(*runner.Spec)) *runner.Algorithm {
	t.Helper()
	spec := runner.Spec{
		Name: "doubler", Version: "1.0.0",
		InputSchema: []byte(numSchema), OutputSchema: []byte(doubledSchema),
		Timeout: 10 * time.Second, MaxBatch: 16, MaxWait: 20 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&spec)
	}
	a, err := runner.NewBatchAlgorithm(spec, func(ctx context.Context, ins []numIn) ([]numOut, error) {
		calls.Add(1)
		outs := make([]numOut, len(ins))
		var errs runner.BatchErrors
		slept := false
		for i, in := range ins {
			switch in.Mode {
			case "reject":
				if errs == nil {
					errs = make(runner.BatchErrors, len(ins))
				}
				errs[i] = runner.Reject("item %d refused", in.N)
			case "panic":
				panic("boom")
			case "sleep":
				if slept {
					break
				}
				slept = true
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			outs[i] = numOut{Doubled: 2 * in.N}
		}
		if errs != nil {
			return outs, errs
		}
		return outs, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func batchStats(t *testing.T, nc *nats.Conn, name string) runner.BatchStats {
	t.Helper()
	msg, err := nc.Request("$SRV.STATS."+name, nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Endpoints []struct {
			Data struct {
				Batches *runner.BatchStats `json:"batches"`
			} `json:"data"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(msg.Data, &st); err != nil || len(st.Endpoints) != 1 || st.Endpoints[0].Data.Batches == nil {
		t.Fatalf("stats %s: %v", msg.Data, err)
	}
	return *st.Endpoints[0].Data.Batches
}

// 64 concurrent callers are served in batches, and each gets its own
// answer: batching must neither mix up replies nor serve one by one.
func TestBatchServesConcurrentCallersInBatches(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	var calls atomic.Int64
	start(t, nc, []*runner.Algorithm{doubler(t, &calls, nil)})

	const callers = 64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := nc.Request("run.doubler", fmt.Appendf(nil, `{"n":%d}`, i), 10*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if e := protocol.ReplyError(msg); e != nil {
				errs <- e
				return
			}
			var out numOut
			if err := json.Unmarshal(msg.Data, &out); err != nil || out.Doubled != 2*i {
				errs <- fmt.Errorf("caller %d got %s", i, msg.Data)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := batchStats(t, nc, "doubler")
	if st.Items != callers || st.Batches != calls.Load() || st.Batches >= callers || st.MaxSize < 2 || st.MaxSize > 16 || st.AvgSize <= 1 {
		t.Fatalf("batch stats %+v (function calls %d): want %d items in fewer than %d batches of at most 16", st, calls.Load(), callers, callers)
	}
}

// Errors are per item: a rejected item fails alone, its batch mates get
// their outputs; a panic fails the batch's items with 500 and the runner
// keeps serving.
func TestBatchErrorsArePerItem(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	var calls atomic.Int64
	// A full batch leaves at once; MaxWait only gives the three
	// concurrent callers time to arrive on a loaded machine.
	start(t, nc, []*runner.Algorithm{doubler(t, &calls, func(sp *runner.Spec) { sp.MaxWait = time.Second; sp.MaxBatch = 3 })})

	bodies := []string{`{"n":1}`, `{"n":2,"mode":"reject"}`, `{"n":3}`}
	replies := make([]*nats.Msg, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], _ = nc.Request("run.doubler", []byte(b), 5*time.Second)
		}()
	}
	wg.Wait()
	for i, want := range []string{`{"doubled":2}`, "422", `{"doubled":6}`} {
		m := replies[i]
		if m == nil {
			t.Fatalf("item %d: no reply", i)
		}
		got := string(m.Data)
		if e := protocol.ReplyError(m); e != nil {
			got = fmt.Sprint(e.Code)
		}
		if got != want {
			t.Errorf("item %d: got %s, want %s", i, got, want)
		}
	}
	if st := batchStats(t, nc, "doubler"); st.MaxSize != 3 {
		t.Errorf("the three items were not one batch: %+v", st)
	}

	m, err := nc.Request("run.doubler", []byte(`{"n":1,"mode":"panic"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := protocol.ReplyError(m); e == nil || e.Code != runner.CodeInternal {
		t.Fatalf("panic: got %s", m.Data)
	}
	m, err = nc.Request("run.doubler", []byte(`{"n":4}`), 10*time.Second)
	if err != nil || string(m.Data) != `{"doubled":8}` {
		t.Fatalf("after a panic: %v %s", err, m.Data)
	}
}

// Each caller keeps its own deadline: a caller with a short timeout is
// answered 504 on time even though its batch mate has a long one.
func TestBatchCallerKeepsItsOwnDeadline(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	var calls atomic.Int64
	start(t, nc, []*runner.Algorithm{doubler(t, &calls, func(sp *runner.Spec) { sp.MaxBatch = 2; sp.MaxWait = 500 * time.Millisecond })})
	short := make(chan *nats.Msg, 1)
	go func() {
		m, _ := nc.RequestMsg(&nats.Msg{Subject: "run.doubler", Data: []byte(`{"n":1,"mode":"sleep"}`),
			Header: nats.Header{protocol.HeaderTimeout: []string{"300ms"}}}, 10*time.Second)
		short <- m
	}()
	m, err := nc.Request("run.doubler", []byte(`{"n":2,"mode":"sleep"}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sm := <-short
	if e := protocol.ReplyError(sm); e == nil || e.Code != runner.CodeDeadline {
		t.Fatalf("short caller: got %v", sm)
	}
	// The long caller's batch ran to its end (1s sleep) although the
	// short caller had gone: its batch lives until its own deadline.
	if e := protocol.ReplyError(m); e != nil || string(m.Data) != `{"doubled":4}` {
		t.Fatalf("long caller: %v %s", e, m.Data)
	}
}

// A raw algorithm passes JSON through unchanged and refuses output that is
// not JSON with a 500, not a corrupt reply.
func TestRawAlgorithm(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	a, err := runner.NewRawAlgorithm(runner.Spec{
		Name: "raw", Version: "1.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
		if strings.Contains(string(in), "garbage") {
			return json.RawMessage(`{not json`), nil
		}
		return in, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, nc, []*runner.Algorithm{a})
	m, err := nc.Request("run.raw", []byte(`{"a": [1, 2]}`), 5*time.Second)
	if err != nil || string(m.Data) != `{"a":[1,2]}` {
		t.Fatalf("echo: %v %s", err, m.Data)
	}
	m, err = nc.Request("run.raw", []byte(`{"garbage":true}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if e := protocol.ReplyError(m); e == nil || e.Code != runner.CodeInternal {
		t.Fatalf("garbage output: %s", m.Data)
	}
}

// runner.JobID gives an algorithm the caller's job id.
func TestJobIDInContext(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "job", Version: "1.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, _ map[string]any) (map[string]string, error) {
		return map[string]string{"job_id": runner.JobID(ctx)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	start(t, nc, []*runner.Algorithm{a})
	for hdr, want := range map[string]string{"j-1": `{"job_id":"j-1"}`, "": `{"job_id":""}`} {
		m, err := nc.RequestMsg(&nats.Msg{Subject: "run.job", Data: []byte(`{}`), Header: nats.Header{protocol.HeaderJobID: []string{hdr}}}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != want {
			t.Errorf("job id %q: %s, want %s", hdr, m.Data, want)
		}
	}
}

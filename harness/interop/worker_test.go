package interop_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/worker"
)

// The example runner_adapter.py, in the original convention and with a real
// scikit-learn model, served through the Python SDK and used with the stock
// nats CLI only: its key is in `nats kv ls discovery`, `nats req` gets its
// output, a wrong type is a 400 naming the JSON pointer.
func TestNatsCLIWithPythonWorker(t *testing.T) {
	bin := natsCLI(t)
	py := python.Find(t, "sklearn")
	s := natstest.Start(t)
	nc := s.Connect()
	sdk, _ := filepath.Abs("../../sdk/python/pnpworker.py")
	adapter, _ := filepath.Abs("../../examples/python/runner_adapter.py")
	w, err := worker.New(nc, worker.Config{Command: []string{py, sdk, adapter}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	c := newCLI(t, bin, s.URL())
	const setosa = `{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}`
	natstest.Eventually(t, 60*time.Second, func() bool {
		m, err := nc.Request("run.iris_species", []byte(setosa), 2*time.Second)
		return err == nil && protocol.ReplyError(m) == nil
	}, "iris_species is not served")

	t.Run("kv ls discovery lists its keys", func(t *testing.T) {
		// A runner subscribes before it registers: poll.
		var stdout string
		natstest.Eventually(t, 10*time.Second, func() bool {
			stdout, _ = c.run(t, "kv", "ls", "discovery")
			var algs []string
			for _, k := range strings.Fields(stdout) {
				algs = append(algs, strings.SplitN(k, ".", 2)[0])
			}
			return slices.Contains(algs, "iris_species") && slices.Contains(algs, "text_stats")
		}, "nats kv ls discovery printed %s, want keys of iris_species and text_stats", lazy(func() string { return stdout }))
	})

	t.Run("req returns the model's output", func(t *testing.T) {
		stdout, stderr := c.run(t, "req", "run.iris_species", `{"sepal_length":6.7,"sepal_width":3.0,"petal_length":5.2,"petal_width":2.3}`)
		if strings.Contains(stderr, protocol.HeaderErrorCode) {
			t.Fatalf("error reply:\n%s\n%s", stderr, stdout)
		}
		var out struct {
			Species    string  `json:"species"`
			Confidence float64 `json:"confidence"`
		}
		decodeJSON(t, stdout, &out)
		if out.Species != "virginica" || out.Confidence < 0.5 {
			t.Fatalf("output %+v, want virginica", out)
		}
	})

	t.Run("req with a wrong type gets a 400 with the pointer", func(t *testing.T) {
		stdout, stderr := c.run(t, "req", "run.iris_species", `{"sepal_length":"long","sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}`)
		if !strings.Contains(stderr, protocol.HeaderErrorCode+": 400") {
			t.Fatalf("stderr lacks a 400 header:\n%s", stderr)
		}
		var body protocol.Error
		decodeValid(t, stdout, "error.json", &body)
		if len(body.Violations) != 1 || body.Violations[0].Pointer != "/sepal_length" {
			t.Fatalf("violations %v, want one at /sepal_length", body.Violations)
		}
	})

	t.Run("req with a default parameter left out", func(t *testing.T) {
		stdout, _ := c.run(t, "req", "run.text_stats", `{"text":"to be or not to be"}`)
		var out struct {
			Words int `json:"words"`
			Top   []struct {
				Word  string `json:"word"`
				Count int    `json:"count"`
			} `json:"top"`
		}
		decodeJSON(t, stdout, &out)
		if out.Words != 6 || len(out.Top) != 3 || out.Top[0].Word != "be" || out.Top[0].Count != 2 {
			t.Fatalf("output %+v", out)
		}
	})
}

// decodeJSON decodes the one JSON document the CLI printed on stdout.
func decodeJSON(t *testing.T, doc string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(strings.TrimSpace(doc)), v); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, doc)
	}
}

// lazy is a message argument evaluated when it is printed.
type lazy func() string

func (l lazy) String() string { return l() }

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"pnpworker/internal/natstest"
	"pnpworker/internal/python"
	"pnpworker/protocol"
	"pnpworker/runner"
	"pnpworker/worker"
)

// BenchmarkWorkers compares, in one run and with the same closed-loop load
// generator at 64 in flight:
//
//   - the same trivial Python function served (a) through the worker
//     protocol (runner + sdk/python/pnpworker.py) and (b) the original
//     pattern's way, FastAPI + pydantic + uvicorn over HTTP;
//   - the worker protocol against the runner serving the Go version of the
//     function in-process;
//   - the scikit-learn digits model of examples/python/digits.py one image
//     per call against batches of up to 32.
//
// b.N is the number of measured requests per round for the word counts
// (a tenth of it, at least 200, for the model); run it with a fixed count:
//
//	go test -run '^$' -bench BenchmarkWorkers -benchtime 5000x ./harness/bench/
//
// It needs /usr/bin/python3 (or python3) with sklearn, fastapi and uvicorn.
func BenchmarkWorkers(b *testing.B) {
	py, ok := python.Lookup("sklearn", "fastapi", "uvicorn")
	if !ok {
		b.Skip("needs python3 >= 3.9 with sklearn, fastapi and uvicorn (apt-get install python3-sklearn python3-fastapi python3-uvicorn)")
	}
	if b.N == 1 {
		return // the framework's probe run; the real one has b.N requests
	}
	if b.N < 200 {
		b.Skip("run with -benchtime Nx, N >= 200 (e.g. -benchtime 5000x)")
	}
	const rounds = 3
	requests := b.N
	modelRequests := max(200, b.N/10)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	s := natstest.Start(b)
	serveNC, loadNC := s.Connect(), s.Connect()
	sdk, _ := filepath.Abs("../../sdk/python/pnpworker.py")
	digits, _ := filepath.Abs("../../examples/python/digits.py")

	// The Go word count in-process, and the Python one through a worker.
	goAlg, err := NewAlgorithm(0)
	if err != nil {
		b.Fatal(err)
	}
	r, err := runner.New(serveNC, []*runner.Algorithm{goAlg})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go r.Run(runCtx)
	for _, cmd := range [][]string{{py, sdk, "testdata/py_word_count.py"}, {py, sdk, digits}} {
		// Four requests at once per process, as an operator says with
		// --worker-concurrency 4 for thread-safe functions (the SDK's
		// default is one at a time).
		w, err := worker.New(serveNC, worker.Config{Command: cmd, Env: []string{"PNP_WORKER_CONCURRENCY=4"}, Logger: zerolog.Nop()})
		if err != nil {
			b.Fatal(err)
		}
		go w.Run(runCtx)
	}
	// The FastAPI runner.
	port := freePort(b)
	uv := exec.CommandContext(runCtx, py, "-m", "uvicorn", "fastapi_runner:app", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--log-level", "warning", "--no-access-log")
	uv.Dir = "testdata"
	uv.Stderr = os.Stderr
	if err := uv.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stop(); _ = uv.Wait() }()
	httpURL := fmt.Sprintf("http://127.0.0.1:%d/run/py_word_count", port)
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}

	words := Payloads()
	pixels := digitPayloads()
	for _, subj := range []string{"run." + AlgorithmName, "run.py_word_count", "run.digits", "run.digits_batch"} {
		payload := words[0]
		if subj == "run.digits" || subj == "run.digits_batch" {
			payload = pixels[0]
		}
		natstest.Eventually(b, 60*time.Second, func() bool {
			m, err := loadNC.Request(subj, payload, 2*time.Second)
			return err == nil && protocol.ReplyError(m) == nil
		}, "%s is not served", subj)
	}
	natstest.Eventually(b, 60*time.Second, func() bool {
		_, err := GenerateHTTP(ctx, client, httpURL, words, LoadConfig{Requests: 1, InFlight: 1})
		resp, herr := client.Post(httpURL, "application/json", nil)
		if herr == nil {
			resp.Body.Close()
		}
		return err == nil && herr == nil && resp.StatusCode == http.StatusUnprocessableEntity
	}, "uvicorn is not serving")

	type target struct {
		name string
		run  func(n int) (Result, error)
		n    int
	}
	natsTarget := func(subj string, payloads [][]byte) func(int) (Result, error) {
		return func(n int) (Result, error) {
			return Generate(ctx, loadNC, subj, payloads, LoadConfig{Requests: n})
		}
	}
	targets := []target{
		{"go in-process (runner)", natsTarget("run."+AlgorithmName, words), requests},
		{"python worker (runner --worker)", natsTarget("run.py_word_count", words), requests},
		{"python fastapi+uvicorn (http)", func(n int) (Result, error) {
			return GenerateHTTP(ctx, client, httpURL, words, LoadConfig{Requests: n})
		}, requests},
		{"digits model, 1 per call", natsTarget("run.digits", pixels), modelRequests},
		{"digits model, batches of 32", natsTarget("run.digits_batch", pixels), modelRequests},
	}
	results := make([][]Result, len(targets))
	b.ResetTimer()
	for round := range rounds {
		for i, t := range targets {
			if _, err := t.run(min(t.n, 500)); err != nil { // warm-up
				b.Fatal(err)
			}
			res, err := t.run(t.n)
			if err != nil {
				b.Fatal(err)
			}
			if res.Errors > 0 {
				b.Fatalf("%s: %d errors, first: %s", t.name, res.Errors, res.FirstError)
			}
			results[i] = append(results[i], res)
			b.Logf("round %d %-34s %8.0f req/s  p50 %s  p99 %s", round+1, t.name, res.PerSecond, res.P50, res.P99)
		}
	}
	b.StopTimer()

	med := func(i int, f func(Result) float64) float64 {
		xs := make([]float64, 0, rounds)
		for _, r := range results[i] {
			xs = append(xs, f(r))
		}
		slices.Sort(xs)
		return xs[len(xs)/2]
	}
	rps := func(r Result) float64 { return r.PerSecond }
	p50 := func(r Result) float64 { return float64(r.P50) }
	p99 := func(r Result) float64 { return float64(r.P99) }
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nmedian of %d rounds, 64 in flight, %d requests per round (model: %d)\n", rounds, requests, modelRequests)
	fmt.Fprintln(tw, "target\treq/s\tp50\tp99\t")
	for i, t := range targets {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t\n", t.name, med(i, rps), time.Duration(med(i, p50)).Round(10*time.Microsecond), time.Duration(med(i, p99)).Round(10*time.Microsecond))
	}
	ratios := []struct {
		name   string
		v      float64
		target string
	}{
		{"worker ÷ fastapi, throughput", med(1, rps) / med(2, rps), "≥ 2"},
		{"worker ÷ fastapi, p50", med(1, p50) / med(2, p50), "≤ 1"},
		{"worker ÷ go in-process, throughput", med(1, rps) / med(0, rps), ""},
		{"worker ÷ go in-process, p50", med(1, p50) / med(0, p50), ""},
		{"batch 32 ÷ batch 1, throughput", med(4, rps) / med(3, rps), "≥ 3"},
	}
	fmt.Fprintln(tw, "\nratio\tvalue\ttarget\t")
	for _, r := range ratios {
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t\n", r.name, r.v, r.target)
	}
	tw.Flush()
	b.ReportMetric(ratios[0].v, "worker/fastapi-rps")
	b.ReportMetric(ratios[1].v, "worker/fastapi-p50")
	b.ReportMetric(ratios[2].v, "worker/go-rps")
	b.ReportMetric(ratios[4].v, "batch32/batch1-rps")
}

// digitPayloads are 16 deterministic 8×8 images for the digits model.
func digitPayloads() [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, 16)
	for i := range out {
		px := make([]int, 64)
		for j := range px {
			px[j] = rng.IntN(17)
		}
		out[i], _ = json.Marshal(map[string]any{"pixels": px})
	}
	return out
}

func freePort(b *testing.B) int {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

package bench

import (
	"bytes"
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
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
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
//     per call against batches of up to 32;
//
// and, with one request in flight, the latency of the Go word count, the
// worker and FastAPI: each hop's own cost, without queueing.
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

	// As deployments run it: a nats-server of its own, each runner a
	// process of its own (pnp runner --worker), uvicorn a process of its
	// own; only the load generator (and the Go word count, the in-process
	// reference) lives in this process, for both sides alike.
	dir := b.TempDir()
	natsBin := buildBinary(b, dir, "nats-server", "github.com/nats-io/nats-server/v2")
	pnpBin := buildBinary(b, dir, "pnp", "github.com/pnpworker/pnpworker/cmd/pnp")
	natsPort := freePort(b)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	srv := startProcess(b, ctx, "", nil, natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(natsPort), "-js", "-sd", filepath.Join(dir, "js"))
	serveNC, loadNC := connectWhenUp(b, natsURL), connectWhenUp(b, natsURL)
	sdk, _ := filepath.Abs("../../sdk/python/pnpworker.py")
	digits, _ := filepath.Abs("../../examples/python/digits.py")
	wordCount, _ := filepath.Abs("testdata/py_word_count.py")

	// The Go word count in this process, the reference.
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
	// The Python ones through pnp runner --worker, each runner its own
	// process. Four requests at once per worker process, as an operator
	// says with --worker-concurrency 4 for thread-safe functions (the
	// SDK's default is one at a time).
	pyRunner := func(adapter string) *exec.Cmd {
		return startProcess(b, runCtx, "", nil, pnpBin, "runner", "--server", natsURL, "--algorithms", "none", "--log-level", "warn",
			"--worker-concurrency", "4", "--worker", py+" "+sdk+" "+adapter)
	}
	wordRunner := pyRunner(wordCount)
	pyRunner(digits)
	// The FastAPI runner: the original design over the same adapter.
	port := freePort(b)
	uv := startProcess(b, runCtx, "testdata", nil, py, "-m", "uvicorn", "fastapi_runner:app", "--host", "127.0.0.1", "--port", strconv.Itoa(port), "--log-level", "warning", "--no-access-log")
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
		name  string
		run   func(n int) (Result, error)
		n     int
		procs func() []namedPID // whose CPU per request is reported
	}
	self := namedPID{"bench (load generator)", os.Getpid()}
	natsd := namedPID{"nats-server", srv.Process.Pid}
	overNATS := func(runnerPID int) func() []namedPID {
		return func() []namedPID {
			ps := []namedPID{self, natsd}
			if runnerPID != 0 {
				ps = append(ps, namedPID{"pnp runner", runnerPID})
				for _, c := range Children(runnerPID) {
					ps = append(ps, namedPID{"python worker", c})
				}
			}
			return ps
		}
	}
	natsTarget := func(subj string, payloads [][]byte) func(int) (Result, error) {
		return func(n int) (Result, error) {
			return Generate(ctx, loadNC, subj, payloads, LoadConfig{Requests: n})
		}
	}
	oneAtATime := func(subj string, payloads [][]byte) func(int) (Result, error) {
		return func(n int) (Result, error) {
			return Generate(ctx, loadNC, subj, payloads, LoadConfig{Requests: n, InFlight: 1})
		}
	}
	targets := []target{
		{"go in-process (runner)", natsTarget("run."+AlgorithmName, words), requests, overNATS(0)},
		{"python worker (runner --worker)", natsTarget("run.py_word_count", words), requests, overNATS(wordRunner.Process.Pid)},
		{"python fastapi+uvicorn (http)", func(n int) (Result, error) {
			return GenerateHTTP(ctx, client, httpURL, words, LoadConfig{Requests: n})
		}, requests, func() []namedPID { return []namedPID{self, {"uvicorn", uv.Process.Pid}} }},
		{"digits model, 1 per call", natsTarget("run.digits", pixels), modelRequests, nil},
		{"digits model, batches of 32", natsTarget("run.digits_batch", pixels), modelRequests, nil},
		// One request in flight: the hop's own latency, without queueing.
		{"go in-process, 1 in flight", oneAtATime("run."+AlgorithmName, words), requests, nil},
		{"python worker, 1 in flight", oneAtATime("run.py_word_count", words), requests, nil},
		{"python fastapi, 1 in flight", func(n int) (Result, error) {
			return GenerateHTTP(ctx, client, httpURL, words, LoadConfig{Requests: n, InFlight: 1})
		}, requests, nil},
	}
	results := make([][]Result, len(targets))
	// cpu[i][process] holds target i's CPU per request of that process,
	// in µs, one value per round.
	cpu := make([]map[string][]float64, len(targets))
	b.ResetTimer()
	for round := range rounds {
		for i, t := range targets {
			if _, err := t.run(min(t.n, 500)); err != nil { // warm-up
				b.Fatal(err)
			}
			var procs []namedPID
			if t.procs != nil {
				procs = t.procs()
			}
			before := cpuOf(b, procs)
			res, err := t.run(t.n)
			if err != nil {
				b.Fatal(err)
			}
			if procs != nil {
				after := cpuOf(b, procs)
				if cpu[i] == nil {
					cpu[i] = map[string][]float64{}
				}
				for name, d := range after {
					cpu[i][name] = append(cpu[i][name], float64((d-before[name]).Microseconds())/float64(res.OK))
				}
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
	fmt.Fprintf(tw, "\nCPU per request, µs (median of %d rounds; /proc, 10 ms ticks)\n", rounds)
	fmt.Fprintln(tw, "target\tprocess\tµs/request\t")
	cpuTotal := make([]float64, len(targets))
	for i, t := range targets {
		names := make([]string, 0, len(cpu[i]))
		for n := range cpu[i] {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			xs := slices.Sorted(slices.Values(cpu[i][n]))
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t\n", t.name, n, xs[len(xs)/2])
			cpuTotal[i] += xs[len(xs)/2]
		}
		if len(names) > 0 {
			fmt.Fprintf(tw, "%s\tall of the above\t%.0f\t\n", t.name, cpuTotal[i])
		}
	}
	ratios := []struct {
		name   string
		v      float64
		target string
	}{
		{"worker ÷ fastapi, throughput", med(1, rps) / med(2, rps), "≥ 4"},
		{"worker ÷ fastapi, CPU per request (all processes)", cpuTotal[1] / cpuTotal[2], "< 1"},
		{"worker ÷ fastapi, p50", med(1, p50) / med(2, p50), "≤ 1"},
		{"worker ÷ go in-process, throughput", med(1, rps) / med(0, rps), ""},
		{"worker ÷ go in-process, p50", med(1, p50) / med(0, p50), ""},
		{"batch 32 ÷ batch 1, throughput", med(4, rps) / med(3, rps), "≥ 3"},
	}
	fmt.Fprintln(tw, "\nratio\tvalue\ttarget\t")
	for _, r := range ratios {
		fmt.Fprintf(tw, "%s\t%.2f\t%s\t\n", r.name, r.v, r.target)
	}
	fmt.Fprintf(tw, "worker − go in-process, p50 at 1 in flight\t%s\t\t\n", time.Duration(med(6, p50)-med(5, p50)).Round(time.Microsecond))
	fmt.Fprintf(tw, "worker ÷ fastapi, p50 at 1 in flight\t%.2f\t\t\n", med(6, p50)/med(7, p50))
	tw.Flush()
	b.ReportMetric(ratios[0].v, "worker/fastapi-rps")
	b.ReportMetric(ratios[2].v, "worker/fastapi-p50")
	b.ReportMetric(ratios[3].v, "worker/go-rps")
	b.ReportMetric(ratios[5].v, "batch32/batch1-rps")
	b.ReportMetric(ratios[1].v, "worker/fastapi-cpu")
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

// namedPID is a process whose CPU the benchmark reports.
type namedPID struct {
	name string
	pid  int
}

// cpuOf reads the CPU time of each process, summed by name (the
// processes of one kind: python workers), this process's own from
// getrusage.
func cpuOf(b *testing.B, procs []namedPID) map[string]time.Duration {
	b.Helper()
	out := map[string]time.Duration{}
	for _, p := range procs {
		if p.pid == os.Getpid() {
			out[p.name] += processCPU()
			continue
		}
		d, err := PIDCPU(p.pid)
		if err != nil {
			b.Fatalf("CPU of %s (pid %d): %v", p.name, p.pid, err)
		}
		out[p.name] += d
	}
	return out
}

// buildBinary builds pkg (a main package path) into dir/name, once.
func buildBinary(b *testing.B, dir, name, pkg string) string {
	b.Helper()
	bin := filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// syncBuffer collects a process's output, shown if the benchmark fails.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startProcess starts a process until ctx ends (or the benchmark does);
// its output is shown if the benchmark fails.
func startProcess(b *testing.B, ctx context.Context, dir string, env []string, name string, args ...string) *exec.Cmd {
	b.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", name, err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if b.Failed() {
			b.Logf("%s %s:\n%s", name, strings.Join(args, " "), out.String())
		}
	})
	return cmd
}

// connectWhenUp connects to url, waiting up to 30 s for the server.
func connectWhenUp(b *testing.B, url string) *nats.Conn {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			b.Cleanup(nc.Close)
			return nc
		}
		if time.Now().After(deadline) {
			b.Fatalf("connect %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

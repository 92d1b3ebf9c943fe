package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
)

// benchInFlight is how many requests the benchmark keeps in flight; one
// in flight shows the latency the HTTP hop adds without queueing.
var benchInFlight = []int{64, 1}

// benchRounds alternates the two ways this many times each, so that load
// from elsewhere on the machine hits both alike; the medians are reported.
const benchRounds = 5

// BenchmarkGatewayVsDirect sends language_detection requests at 64 in
// flight, alternately straight over NATS (what `nats req` does) and as
// POST /v1/algorithms/language_detection/run through the gateway, in the
// same run against the same runner, and reports the throughput ratio and
// the p50 overhead the HTTP hop adds:
//
//	go test ./gateway/ -run '^$' -bench GatewayVsDirect -benchtime 20000x
func BenchmarkGatewayVsDirect(b *testing.B) {
	s := newStack(b, stackOpts{noProbe: true})
	for _, n := range benchInFlight {
		b.Run(fmt.Sprintf("in_flight=%d", n), func(b *testing.B) { benchGatewayVsDirect(b, s, "language_detection", french, n) })
	}
}

// BenchmarkGatewayHop is BenchmarkGatewayVsDirect over the test's probe
// algorithm, which answers {"ok":true} at once: with next to no work in
// the runner, the gateway's own cost per request (hop_cpu_µs/req, the
// HTTP client's included) is a large share of the process's CPU and
// stands out of the noise.
//
//	go test ./gateway/ -run '^$' -bench GatewayHop -benchtime 40000x
func BenchmarkGatewayHop(b *testing.B) {
	s := newStack(b, stackOpts{})
	for _, n := range benchInFlight {
		b.Run(fmt.Sprintf("in_flight=%d", n), func(b *testing.B) { benchGatewayVsDirect(b, s, "probe", `{}`, n) })
	}
}

func benchGatewayVsDirect(b *testing.B, s *stack, alg, input string, inFlight int) {
	nc := s.srv.Connect()
	body := []byte(input)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: inFlight, MaxConnsPerHost: inFlight}, Timeout: 30 * time.Second}
	url := s.url + "/v1/algorithms/" + alg + "/run"

	direct := func() error {
		m, err := nc.Request(protocol.SubjectPrefix+alg, body, 10*time.Second)
		if err == nil {
			if e := protocol.ReplyError(m); e != nil {
				return e
			}
		}
		return err
	}
	viaHTTP := func() error {
		resp, err := client.Post(url, "application/json", strings.NewReader(input))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &protocol.Error{Code: resp.StatusCode, Message: "gateway status"}
		}
		return nil
	}
	// Warm both paths up (connections, schema caches).
	round(b, inFlight, 512, direct)
	round(b, inFlight, 512, viaHTTP)

	per := max(inFlight, b.N/(2*benchRounds))
	var dRate, gRate, dCPU, gCPU []float64
	var dLat, gLat []time.Duration
	b.ResetTimer()
	for range benchRounds {
		r, l, c := round(b, inFlight, per, direct)
		dRate, dLat, dCPU = append(dRate, r), append(dLat, l...), append(dCPU, c)
		r, l, c = round(b, inFlight, per, viaHTTP)
		gRate, gLat, gCPU = append(gRate, r), append(gLat, l...), append(gCPU, c)
	}
	b.StopTimer()
	dr, gr := median(dRate), median(gRate)
	dp, gp := pct(dLat, 0.5), pct(gLat, 0.5)
	b.ReportMetric(dr, "direct_req/s")
	b.ReportMetric(gr, "gateway_req/s")
	b.ReportMetric(gr/dr, "gateway/direct")
	b.ReportMetric(float64(dp.Microseconds()), "direct_p50_µs")
	b.ReportMetric(float64(gp.Microseconds()), "gateway_p50_µs")
	b.ReportMetric(float64((gp - dp).Microseconds()), "p50_overhead_µs")
	// CPU per request of the whole process (server, runner, client, and
	// the gateway on the HTTP side): the difference is what the HTTP hop
	// costs, the gateway's handler and the HTTP client together.
	dc, gc := median(dCPU), median(gCPU)
	b.ReportMetric(dc, "direct_cpu_µs/req")
	b.ReportMetric(gc, "gateway_cpu_µs/req")
	b.ReportMetric(gc-dc, "hop_cpu_µs/req")
	b.ReportMetric(0, "ns/op")
}

// processCPU is the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// round sends n requests with inFlight workers and returns the
// throughput, every request's latency and the process's CPU time per
// request in µs.
func round(b *testing.B, inFlight, n int, send func() error) (float64, []time.Duration, float64) {
	b.Helper()
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var failed atomic.Value
	start, cpu := time.Now(), processCPU(b)
	for range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				t0 := time.Now()
				if err := send(); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), processCPU(b)-cpu
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("request failed: %v", err)
	}
	return float64(n) / elapsed.Seconds(), lat, float64(cpu.Microseconds()) / float64(n)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func pct(v []time.Duration, q float64) time.Duration {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

package runner_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/runner"
)

// pnp_runner_utilization, scraped from /metrics, is 0 while the runner is
// idle, near 1 while more clients than MaxConcurrency keep it busy (what
// an autoscaler's Prometheus trigger reads), and 0 again once they stop.
func TestUtilizationUnderLoad(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	reg := prometheus.NewRegistry()
	const capacity = 4
	start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = capacity; s.MaxPending = 4 * capacity })}, runner.WithMetrics(reg))
	url := serveMetrics(t, reg)
	const alg = "algorithm=word_count"
	util := func() float64 { return metricstest.Scrape(t, url).Value(t, "pnp_runner_utilization", alg) }

	if f := metricstest.Scrape(t, url); util() != 0 || f.Value(t, "pnp_runner_max_concurrency", alg) != capacity {
		t.Fatalf("idle: utilization %g, max concurrency %g; want 0 and %d", util(), f.Value(t, "pnp_runner_max_concurrency", alg), capacity)
	}

	// Twice as many closed-loop clients as the runner runs at once: a
	// worker that finishes finds the next request waiting.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 * capacity {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := nc.Request("run.word_count", []byte(`{"text":"busy","sleep_ms":100}`), 10*time.Second); err != nil {
					t.Errorf("request under load: %v", err)
					return
				}
			}
		}()
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return util() == 1 }, "utilization never reached 1 under load")
	var samples []float64
	for range 10 {
		samples = append(samples, util())
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	slices.Sort(samples)
	if med := samples[len(samples)/2]; med < 0.75 || samples[len(samples)-1] > 1 {
		t.Errorf("utilization under saturating load: median %g, samples %v; want near 1, never above", med, samples)
	}
	natstest.Eventually(t, 10*time.Second, func() bool { return util() == 0 }, "utilization not back to 0 when idle")
}

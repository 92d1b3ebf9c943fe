package controller_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/runner"
)

// TestQueueMetricsBoundedReliability stores jobs under 300 algorithm names
// nobody serves (and two that can be no algorithm's), as anyone allowed to
// publish jobs can. The queue gauges must stay a bounded number of series
// that still add up to every stored job, with the served algorithm and the
// largest backlogs named.
func TestQueueMetricsBoundedReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	reg := prometheus.NewRegistry()
	startRunnerWith(t, e.srv, []*runner.Algorithm{echo(t, "echo", nil)})
	cfg := fastConfig(t)
	cfg.Metrics = reg
	startController(t, e, cfg)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(subject string) {
		if _, err := e.js.Publish(ctx, subject, []byte(`{"n":1}`)); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	total := 0
	for i := range 300 {
		publish(fmt.Sprintf("jobs.bogus_%03d", i))
		total++
	}
	for range 4 {
		publish("jobs.bogus_big") // the largest backlog: named
		total++
	}
	for _, subj := range []string{"jobs.Not-An-Algorithm", "jobs._hidden"} {
		publish(subj)
		total++
	}

	var f metricstest.Families
	natstest.Eventually(t, 10*time.Second, func() bool {
		f = metricstest.Scrape(t, srv.URL+"/metrics")
		return f.Value(t, "pnp_controller_queue_waiting", "algorithm=bogus_big") == 4
	}, "the largest backlog is not named")
	series := f["pnp_controller_queue_waiting"].GetMetric()
	if n, most := len(series), 1+50+1; n > most {
		t.Errorf("%d queue_waiting series, want at most %d (echo, 50 unserved, %s)", n, most, controller.OtherAlgorithms)
	}
	sum := 0.0
	for _, m := range series {
		sum += m.GetGauge().GetValue()
	}
	if sum != float64(total) {
		t.Errorf("queue_waiting sums to %g, want every stored job: %d", sum, total)
	}
	if got := f.Value(t, "pnp_controller_queue_waiting", "algorithm="+controller.OtherAlgorithms); got != float64(total-4-49) {
		t.Errorf("%s waiting = %g, want %d", controller.OtherAlgorithms, got, total-4-49)
	}
	if f.Find(t, "pnp_controller_queue_waiting", "algorithm=echo") == nil || f.Value(t, "pnp_controller_queue_info_up") != 1 {
		t.Errorf("the served algorithm is not reported, or the queue read failed:\n%s", f.Names())
	}
}

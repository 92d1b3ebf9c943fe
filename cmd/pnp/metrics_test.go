package main

import (
	"testing"

	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// TestMetricsFlag runs `pnp runner` and `pnp controller` with --metrics,
// sends a job through them, and scrapes each process's /metrics.
func TestMetricsFlag(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	url := s.URL()
	runnerAddr, _ := freeLoopbackAddr(t)
	ctlAddr, _ := freeLoopbackAddr(t)
	r := startPnp(t, "runner", "--server", url, "--algorithms", "language_detection", "--metrics", runnerAddr)
	c := startPnp(t, "controller", "--server", url, "--metrics", ctlAddr)

	var code int
	var stdout, stderr string
	natstest.Eventually(t, pnpTimeout, func() bool {
		code, stdout, stderr = runPnp(t, "submit", "--server", url, "--id", "metrics-1", "--wait", "--timeout", "20s", "language_detection",
			`{"text":"Le renard brun saute par-dessus le chien paresseux"}`)
		return code == 0
	}, "job did not succeed: exit %d\nstdout:\n%s\nstderr:\n%s\nrunner:\n%s\ncontroller:\n%s", &code, &stdout, &stderr, &r.stderr, &c.stderr)

	// A reply is counted just after it is sent.
	var rf metricstest.Families
	natstest.Eventually(t, pnpTimeout, func() bool {
		rf = metricstest.Scrape(t, "http://"+runnerAddr+"/metrics")
		return rf.Value(t, "pnp_runner_requests_total", "algorithm=language_detection", "code=200") >= 1
	}, "runner requests_total{language_detection,200} does not count the job")
	if got := rf.Value(t, "pnp_runner_requests_total", "algorithm=language_detection", "code=200"); got != 1 {
		t.Errorf("runner requests_total{language_detection,200} = %g, want 1", got)
	}
	rf.Histogram(t, "pnp_runner_request_duration_seconds", "algorithm=language_detection", "code=200")
	if rf.Value(t, "go_goroutines") <= 0 || rf.Value(t, "process_start_time_seconds") <= 0 {
		t.Errorf("the runtime and process collectors are missing:\n%s", rf.Names())
	}
	cf := metricstest.Scrape(t, "http://"+ctlAddr+"/metrics")
	if got := cf.Value(t, "pnp_controller_jobs_total", "algorithm=language_detection", "status=succeeded"); got != 1 {
		t.Errorf("controller jobs_total{language_detection,succeeded} = %g, want 1", got)
	}
	if cf.Find(t, "pnp_runner_requests_total") != nil {
		t.Error("the controller process serves runner metrics")
	}
}

// TestUpMetrics checks that `pnp up --metrics` serves the runner's and the
// controller's metrics from one registry on one address.
func TestUpMetrics(t *testing.T) {
	isolateEnv(t)
	natsAddr, _ := freeLoopbackAddr(t)
	metricsAddr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", natsAddr, "--data", t.TempDir(), "--algorithms", "language_detection", "--metrics", metricsAddr)
	up.waitOutput(t, "pnp is up")
	if lang := requestLanguage(t, "nats://"+natsAddr, "Heute ist ein schöner Tag, und wir gehen zusammen in den Wald."); lang != "deu" {
		t.Fatalf("language = %q, want deu", lang)
	}
	// A reply is counted just after it is sent.
	var f metricstest.Families
	natstest.Eventually(t, pnpTimeout, func() bool {
		f = metricstest.Scrape(t, "http://"+metricsAddr+"/metrics")
		return f.Value(t, "pnp_runner_requests_total", "algorithm=language_detection", "code=200") >= 1
	}, "requests_total{language_detection,200} does not count the request")
	if got := f.Value(t, "pnp_runner_requests_total", "algorithm=language_detection", "code=200"); got != 1 {
		t.Errorf("requests_total{language_detection,200} = %g, want 1", got)
	}
	if got := f.Value(t, "pnp_controller_max_in_flight"); got <= 0 {
		t.Errorf("controller metrics missing from pnp up: max_in_flight = %g\n%s", got, f.Names())
	}
	if code := up.stop(t); code != 0 {
		t.Errorf("pnp up: exit %d\nstderr:\n%s", code, up.stderr.String())
	}
}

package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/embedded"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// probe GETs url and returns its status (0 when nothing answers) and body.
func probe(url string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunnerReadyz: pnp runner's /readyz, on its --metrics address, is 503
// until NATS is there and the algorithms are registered, 200 then, and 503
// again when NATS goes away, while /metrics (the liveness probe of
// deploy/kubernetes) answers 200 throughout.
func TestRunnerReadyz(t *testing.T) {
	isolateEnv(t)
	natsAddr, port := freeLoopbackAddr(t)
	metricsAddr, _ := freeLoopbackAddr(t)
	r := startPnp(t, "runner", "--server", "nats://"+natsAddr, "--algorithms", "language_detection",
		"--metrics", metricsAddr, "--drain-timeout", "5s")
	readyz, metrics := "http://"+metricsAddr+"/readyz", "http://"+metricsAddr+"/metrics"
	expect := func(wantReady int, wantBody, why string) {
		t.Helper()
		var code int
		var body string
		natstest.Eventually(t, pnpTimeout, func() bool {
			code, body = probe(readyz)
			return code == wantReady && strings.Contains(body, wantBody)
		}, "%s: /readyz %d %q, want %d %q\nstderr:\n%s", why, &code, &body, wantReady, wantBody, &r.stderr)
		if m, _ := probe(metrics); m != http.StatusOK {
			t.Errorf("%s: /metrics %d, want 200", why, m)
		}
	}
	expect(http.StatusServiceUnavailable, "not connected to NATS", "before NATS")

	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	expect(http.StatusOK, "ok", "with NATS")
	if keys := listKeys(t, "nats://"+natsAddr); len(keys) != 1 {
		t.Errorf("ready with registrations %v, want one", keys)
	}

	srv.Shutdown()
	srv.WaitForShutdown()
	expect(http.StatusServiceUnavailable, "not connected to NATS", "NATS gone")
	// Stopped while NATS is away, its final drain fails: the exit code
	// says so, and is not what this test is about.
	r.stop(t)
}

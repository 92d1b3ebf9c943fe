package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
)

// TestMain keeps every `pnp up` of the tests off the default HTTP port:
// parallel runs (and a developer's own pnp up) would collide on 8080.
func TestMain(m *testing.M) {
	if os.Getenv("PNP_HTTP") == "" {
		os.Setenv("PNP_HTTP", "127.0.0.1:0")
	}
	code := m.Run()
	removeNATSServerBuild()
	os.Exit(code)
}

func TestGatewayRefusesNonLoopbackWithoutToken(t *testing.T) {
	for _, args := range [][]string{
		{"gateway", "--http", "0.0.0.0:0"},
		{"up", "--http", ":0", "--data", t.TempDir()},
	} {
		var stdout, stderr bytes.Buffer
		t.Setenv("PNP_HTTP_TOKEN", "")
		code := run(context.Background(), args, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "bearer token is required") {
			t.Errorf("pnp %s: exit %d, stderr %q; want 2 and a refusal", strings.Join(args, " "), code, stderr.String())
		}
	}
}

func TestGatewayCapFlagsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no uploads", []string{"--http-max-uploads", "0"}, "--http-max-uploads 0"},
		{"no event streams", []string{"--http-max-event-streams", "-1"}, "--http-max-event-streams -1"},
		{"rate not a size", []string{"--http-upload-min-rate", "fast"}, `--http-upload-min-rate (PNP_HTTP_UPLOAD_MIN_RATE) "fast"`},
		{"zero rate", []string{"--http-upload-min-rate", "0"}, "want at least 1 byte"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"gateway"}, tc.args...), &stdout, &stderr)
			if code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestGatewayWaitsForStreams starts `pnp gateway` before the job streams
// exist: it waits for them (no start order), then serves the live
// algorithms, and prints its address only once it knows them.
func TestGatewayWaitsForStreams(t *testing.T) {
	url, _, _ := serveLanguageDetection(t)
	gw := startPnp(t, "gateway", "--server", url, "--http", "127.0.0.1:0", "--log-level", "warn")
	deadline := time.Now().Add(pnpTimeout)
	for !strings.Contains(gw.stderr.String(), "job streams not available yet") {
		if time.Now().After(deadline) {
			t.Fatalf("pnp gateway did not report waiting for the job streams:\n%s", gw.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _, stderr := runPnp(t, "provision", "--server", url); code != 0 {
		t.Fatalf("provision: exit %d: %s", code, stderr)
	}
	gw.waitOutput(t, "gateway on http://")
	m := regexp.MustCompile(`gateway on (http://[0-9.:]+)/`).FindStringSubmatch(gw.stdout.String())
	if m == nil {
		t.Fatalf("no address in %q", gw.stdout.String())
	}
	// Printed once its discovery view has loaded: the first request
	// after the address already finds the runner.
	resp, err := http.Get(m[1] + "/v1/algorithms")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"name":"language_detection"`) {
		t.Fatalf("/v1/algorithms right after the address was printed: %d %s", resp.StatusCode, b)
	}
	if code := gw.stop(t); code != 0 {
		t.Fatalf("pnp gateway: exit %d after cancellation\n%s", code, gw.stderr.String())
	}
}

// TestGatewayMetricsFlag runs `pnp gateway --metrics`: the API's /metrics
// needs the token, the --metrics address serves the same registry without
// it, for a Prometheus in a private network.
func TestGatewayMetricsFlag(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	if code, _, stderr := runPnp(t, "provision", "--server", url); code != 0 {
		t.Fatalf("provision: exit %d: %s", code, stderr)
	}
	metricsAddr, _ := freeLoopbackAddr(t)
	gw := startPnp(t, "gateway", "--server", url, "--http", "127.0.0.1:0", "--http-token", "s3cret", "--metrics", metricsAddr, "--log-level", "warn")
	gw.waitOutput(t, "gateway on http://")
	m := regexp.MustCompile(`gateway on (http://[0-9.:]+)/`).FindStringSubmatch(gw.stdout.String())
	if m == nil {
		t.Fatalf("no address in %q", gw.stdout.String())
	}
	get := func(u, token string) int {
		req, err := http.NewRequest("GET", u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(m[1]+"/v1/algorithms", "s3cret"); code != 200 {
		t.Fatalf("/v1/algorithms with the token: %d", code)
	}
	if code := get(m[1]+"/metrics", ""); code != 401 {
		t.Fatalf("the API's /metrics without the token: %d, want 401", code)
	}
	var f metricstest.Families
	natstest.Eventually(t, pnpTimeout, func() bool {
		f = metricstest.Scrape(t, "http://"+metricsAddr+"/metrics")
		return f.Value(t, "pnp_gateway_http_requests_total", "route=GET /v1/algorithms", "code=200") >= 1
	}, "--metrics does not count GET /v1/algorithms")
	if f.Value(t, "go_goroutines") <= 0 {
		t.Errorf("the runtime collector is missing:\n%s", f.Names())
	}
	if code := gw.stop(t); code != 0 {
		t.Fatalf("pnp gateway: exit %d after cancellation\n%s", code, gw.stderr.String())
	}
}

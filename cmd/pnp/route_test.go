package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/runner"
)

// serveVersion runs a language_detection-shaped test algorithm "ver_echo"
// at version on s until the test ends.
func serveVersion(t *testing.T, s *natstest.Server, version string) {
	t.Helper()
	a, err := runner.NewRawAlgorithm(runner.Spec{
		Name: "ver_echo", Version: version, Description: "echo",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
	if err != nil {
		t.Fatal(err)
	}
	serveAlgorithm(t, s, a)
}

// serveAlgorithm runs a runner of a on s until the test ends and waits
// until it serves.
func serveAlgorithm(t *testing.T, s *natstest.Server, a *runner.Algorithm) {
	t.Helper()
	r, err := runner.New(s.Connect(), []*runner.Algorithm{a})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.Started():
	case <-time.After(pnpTimeout):
		t.Fatal("runner did not start")
	}
}

// The route commands drive the routes bucket, and pnp algorithms shows
// every version with its instances and its part in the route, warning
// when several versions are live without a route.
func TestRouteCommands(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	serveVersion(t, s, "1.0.0")
	serveVersion(t, s, "2.0.0")
	srv := []string{"--server", s.URL()}

	code, stdout, stderr := runPnp(t, append([]string{"algorithms"}, srv...)...)
	if code != 0 || !strings.Contains(stderr, "warning: ver_echo has 2 versions live (1.0.0, 2.0.0) and no route") {
		t.Fatalf("algorithms without a route: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, row := range []string{`(?m)^ver_echo +1\.0\.0 +1 +run\.ver_echo +30s +any +run\.ver_echo\.v1_0_0 `, `(?m)^ver_echo +2\.0\.0 +1 +run\.ver_echo +30s +any +run\.ver_echo\.v2_0_0 `} {
		if !regexp.MustCompile(row).MatchString(stdout) {
			t.Errorf("algorithms lacks a row matching %s:\n%s", row, stdout)
		}
	}

	code, stdout, stderr = runPnp(t, append([]string{"route", "show", "ver_echo"}, srv...)...)
	if code != 1 || !strings.Contains(stderr, "has no route") {
		t.Errorf("route show without a route: exit %d %q %q", code, stdout, stderr)
	}
	for _, bad := range [][]string{
		{"route", "set", "ver_echo"},
		{"route", "set", "ver_echo", "--stable", "1.0.0", "--canary", "2.0.0"},
		{"route", "set", "ver_echo", "--stable", "1.0.0", "--percent", "5"},
		{"route", "set", "ver_echo", "--stable", "1.0.0", "--shadow", "1.0.0"},
		{"route", "set", "ver_echo", "--stable", "one"},
		{"route", "set", "--stable", "1.0.0"},
		{"route", "bogus", "ver_echo"},
	} {
		if code, _, stderr := runPnp(t, append(bad, srv...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)\n%s", bad, code, stderr)
		}
	}

	code, stdout, stderr = runPnp(t, append([]string{"route", "set", "ver_echo", "--stable", "1.0.0", "--canary", "2.0.0", "--percent", "30"}, srv...)...)
	if code != 0 || stdout != "route ver_echo: stable 1.0.0, canary 2.0.0 at 30% of jobs\n" || stderr != "" {
		t.Fatalf("route set: exit %d %q %q", code, stdout, stderr)
	}
	code, stdout, stderr = runPnp(t, append([]string{"algorithms"}, srv...)...)
	if code != 0 || stderr != "" || !strings.Contains(stdout, " stable ") || !strings.Contains(stdout, " canary:30% ") {
		t.Errorf("algorithms with a route: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	code, stdout, _ = runPnp(t, append([]string{"route", "promote", "ver_echo"}, srv...)...)
	if code != 0 || stdout != "route ver_echo: stable 2.0.0\n" {
		t.Errorf("route promote: exit %d %q", code, stdout)
	}
	code, stdout, _ = runPnp(t, append([]string{"route", "show", "ver_echo"}, srv...)...)
	if code != 0 || !strings.HasPrefix(stdout, "route ver_echo: stable 2.0.0 (updated ") {
		t.Errorf("route show: exit %d %q", code, stdout)
	}
	if code, _, stderr := runPnp(t, append([]string{"route", "promote", "ver_echo"}, srv...)...); code != 1 || !strings.Contains(stderr, "no canary or shadow") {
		t.Errorf("promote without a candidate: exit %d %q", code, stderr)
	}
	code, _, stderr = runPnp(t, append([]string{"route", "set", "ver_echo", "--stable", "3.0.0"}, srv...)...)
	if code != 0 || !strings.Contains(stderr, "warning: ver_echo 3.0.0 has no live instance") {
		t.Errorf("route to a version nobody serves: exit %d %q", code, stderr)
	}
	if code, stdout, _ := runPnp(t, append([]string{"route", "clear", "ver_echo"}, srv...)...); code != 0 || !strings.Contains(stdout, "cleared") {
		t.Errorf("route clear: exit %d %q", code, stdout)
	}
}

// pnp route report summarizes the shadow comparisons and pnp replay runs
// the recorded jobs on a candidate; both fail under --min-agreement.
func TestRouteReportAndReplay(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	srv := []string{"--server", s.URL()}
	serveVersion(t, s, "1.0.0")
	// 2.0.0 answers {"n": n+1} for n%4 == 0, else its input.
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "ver_echo", Version: "2.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in map[string]int) (map[string]int, error) {
		if in["n"]%4 == 0 {
			return map[string]int{"n": in["n"] + 1}, nil
		}
		return in, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	serveAlgorithm(t, s, a)

	if code, _, stderr := runPnp(t, append([]string{"route", "set", "ver_echo", "--stable", "1.0.0", "--shadow", "2.0.0"}, srv...)...); code != 0 {
		t.Fatalf("route set: %s", stderr)
	}
	startPnp(t, append([]string{"controller", "--history-rate", "1"}, srv...)...)
	const n = 40
	for i := range n {
		if code, _, stderr := runPnp(t, "submit", "--server", s.URL(), "--id", fmt.Sprintf("job-%d", i), "--wait", "ver_echo", fmt.Sprintf(`{"n":%d}`, i)); code != 0 {
			t.Fatalf("submit %d: %s", i, stderr)
		}
	}
	var out string
	natstest.Eventually(t, 20*time.Second, func() bool {
		_, out, _ = runPnp(t, append([]string{"route", "report", "ver_echo"}, srv...)...)
		return strings.HasPrefix(out, fmt.Sprintf("shadow comparisons of ver_echo: %d compared, %d agree", n, n*3/4))
	}, "route report never showed %d comparisons:\n%s", n, out)
	if !regexp.MustCompile(`(?m)^/n +10 +job-0 job-4 job-8 job-12 job-16$`).MatchString(out) {
		t.Errorf("report does not name /n with examples:\n%s", out)
	}
	if code, _, stderr := runPnp(t, append([]string{"route", "report", "ver_echo", "--min-agreement", "0.9"}, srv...)...); code != 1 || !strings.Contains(stderr, "under --min-agreement 0.9") {
		t.Errorf("report under --min-agreement: exit %d %q", code, stderr)
	}
	if code, out, _ := runPnp(t, append([]string{"route", "report", "ver_echo", "--ignore", "/n", "--min-agreement", "1"}, srv...)...); code != 0 || !strings.Contains(out, "agreement 100.00%") {
		t.Errorf("report ignoring /n: exit %d\n%s", code, out)
	}
	if code, out, _ := runPnp(t, append([]string{"route", "report", "ver_echo", "--field-tolerance", "/n=1", "--min-agreement", "1"}, srv...)...); code != 0 || !strings.Contains(out, "agreement 100.00%") {
		t.Errorf("report with /n within 1: exit %d\n%s", code, out)
	}
	code, out, stderr := runPnp(t, append([]string{"replay", "ver_echo", "--version", "2.0.0", "--last", "20", "--json", "--min-agreement", "0.5"}, srv...)...)
	if code != 0 || !strings.Contains(out, `"total": 20`) || !strings.Contains(out, `"agree": 15`) {
		t.Errorf("replay: exit %d\n%s\n%s", code, out, stderr)
	}
	if code, _, stderr := runPnp(t, append([]string{"replay", "ver_echo", "--version", "2.0.0", "--min-agreement", "0.99"}, srv...)...); code != 1 || !strings.Contains(stderr, "under --min-agreement") {
		t.Errorf("replay under --min-agreement: exit %d %q", code, stderr)
	}
	// Nothing recorded in the window is a failure with a hint, not an
	// empty report a rollout gate could read as agreement.
	code, out, stderr = runPnp(t, append([]string{"replay", "ver_echo", "--version", "2.0.0", "--since", "1ms"}, srv...)...)
	if code != 1 || !strings.Contains(stderr, "no recorded job of ver_echo in the window") || !strings.Contains(stderr, "--history-rate") {
		t.Errorf("replay of an empty window: exit %d, want 1 with a --history-rate hint\n%s\n%s", code, out, stderr)
	}
}

// pnp controller's --shadow-ignore and --shadow-field-tolerance decide the
// stored verdicts: a shadow that adds /t and answers /n within 0.5 agrees
// on every job.
func TestControllerShadowCompareFlags(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	srv := []string{"--server", s.URL()}
	serveVersion(t, s, "1.0.0")
	a, err := runner.NewAlgorithm(runner.Spec{
		Name: "ver_echo", Version: "2.0.0",
		InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`),
	}, func(ctx context.Context, in map[string]float64) (map[string]float64, error) {
		return map[string]float64{"n": in["n"] + 0.25, "t": 7}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	serveAlgorithm(t, s, a)

	if code, _, stderr := runPnp(t, append([]string{"route", "set", "ver_echo", "--stable", "1.0.0", "--shadow", "2.0.0"}, srv...)...); code != 0 {
		t.Fatalf("route set: %s", stderr)
	}
	startPnp(t, append([]string{"controller", "--shadow-ignore", "/t", "--shadow-field-tolerance", "/n=0.5"}, srv...)...)
	const n = 10
	for i := range n {
		if code, _, stderr := runPnp(t, "submit", "--server", s.URL(), "--id", fmt.Sprintf("job-%d", i), "--wait", "ver_echo", fmt.Sprintf(`{"n":%d}`, 100+i)); code != 0 {
			t.Fatalf("submit %d: %s", i, stderr)
		}
	}
	var out string
	natstest.Eventually(t, 20*time.Second, func() bool {
		_, out, _ = runPnp(t, append([]string{"route", "report", "ver_echo"}, srv...)...)
		return strings.HasPrefix(out, fmt.Sprintf("shadow comparisons of ver_echo: %d compared", n))
	}, "route report never showed %d comparisons:\n%s", n, out)
	if !strings.HasPrefix(out, fmt.Sprintf("shadow comparisons of ver_echo: %d compared, %d agree", n, n)) {
		t.Fatalf("the controller's ignore list and field tolerance were not applied:\n%s", out)
	}
	if code, _, stderr := runPnp(t, append([]string{"controller", "--shadow-field-tolerance", "n=1"}, srv...)...); code != 2 {
		t.Errorf("a field tolerance without a pointer: exit %d %q, want 2", code, stderr)
	}
}

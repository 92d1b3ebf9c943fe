package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/runner"
)

// A running job's progress, as `pnp jobs ls`, `pnp result` and
// `pnp result --wait` show it, against a runner and a `pnp controller`.
func TestProgressInTheCLI(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	release := make(chan struct{})
	defer close(release)
	r, err := runner.New(s.Connect(), []*runner.Algorithm{runner.Must(runner.NewAlgorithm(runner.Spec{
		Name: "tiles", Version: "1.0.0", InputSchema: []byte(`{}`), OutputSchema: []byte(`{}`), Timeout: time.Minute,
	}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		if err := runner.Progress(ctx, 0.4, "resizing tiles"); err != nil {
			return struct{}{}, err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return struct{}{}, ctx.Err()
	}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	<-r.Started()
	url := s.URL()
	startPnp(t, "controller", "--server", url, "--log-level", "warn")
	if code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "tiles-1", "tiles", `{}`); code != 0 {
		t.Fatalf("submit: exit %d\n%s%s", code, stdout, stderr)
	}
	natstest.Eventually(t, 30*time.Second, func() bool {
		code, stdout, _ := runPnp(t, "jobs", "ls", "--server", url, "--status", "running")
		return code == 0 && strings.Contains(stdout, "tiles-1") && strings.Contains(stdout, "40% resizing tiles")
	}, "pnp jobs ls --status running does not show the job's progress")
	code, stdout, stderr := runPnp(t, "result", "--server", url, "tiles-1")
	if code != 0 || !strings.Contains(stdout, `"status": "running"`) || !strings.Contains(stdout, `"fraction": 0.4`) {
		t.Fatalf("result: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runPnp(t, "result", "--server", url, "--wait-timeout", "1s", "tiles-1")
	if code == 0 || !strings.Contains(stderr, "running: 40% resizing tiles") || strings.Contains(stderr, "retrying") {
		t.Fatalf("result --wait-timeout: exit %d\n%s", code, stderr)
	}
}

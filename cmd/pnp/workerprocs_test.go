package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/python"
)

// --worker-procs takes N or MIN:MAX; anything else is a usage error (exit
// 2) that says what is wrong with the value.
func TestWorkerProcsFlagErrors(t *testing.T) {
	isolateEnv(t)
	for _, c := range []struct{ value, want string }{
		{"3:1", "the minimum 3 exceeds the maximum 1"},
		{"a:b", `"a" is not a number`},
		{"1:b", `"b" is not a number`},
		{"0:0", "the minimum 0 must be at least 1"},
		{"0", "the minimum 0 must be at least 1"},
		{"-1:2", "the minimum -1 must be at least 1"},
		{"", `"" is not a number`},
		{"1:2:3", `"2:3" is not a number`},
	} {
		t.Run(c.value, func(t *testing.T) {
			code, _, stderr := runPnp(t, "runner", "--worker", "sh", "--worker-procs", c.value, "--server", "nats://127.0.0.1:1")
			if code != 2 || !strings.Contains(stderr, "worker-procs") || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, want 2 with %q\nstderr:\n%s", code, c.want, stderr)
			}
		})
	}
	code, _, stderr := runPnp(t, "runner", "--worker", "sh", "--worker-procs", "1:2", "--worker-idle", "0s", "--server", "nats://127.0.0.1:1")
	if code != 2 || !strings.Contains(stderr, "--worker-idle 0s: want more than 0") {
		t.Fatalf("--worker-idle 0s: exit %d\nstderr:\n%s", code, stderr)
	}
}

func TestProcRange(t *testing.T) {
	for v, want := range map[string]procRange{"1": {1, 1}, "4": {4, 4}, "1:3": {1, 3}, "2:2": {2, 2}, " 1 : 5 ": {1, 5}} {
		var p procRange
		if err := p.Set(v); err != nil || p != want {
			t.Errorf("Set(%q) = %+v, %v; want %+v", v, p, err, want)
		}
	}
	if s := (&procRange{1, 3}).String(); s != "1:3" {
		t.Errorf("String of 1:3 = %q", s)
	}
	if s := (&procRange{2, 2}).String(); s != "2" {
		t.Errorf("String of 2:2 = %q", s)
	}
}

// The banner of pnp up says how many processes of each --worker command
// run, and how to make them follow the backlog; nothing without a worker.
func TestWorkersShown(t *testing.T) {
	for name, c := range map[string]struct {
		commands []string
		procs    procRange
		want     string
	}{
		"no worker": {nil, procRange{1, 1}, ""},
		"one":       {[]string{"w"}, procRange{1, 1}, "1 process of each --worker command (--worker-procs N for more, MIN:MAX to follow the backlog)"},
		"fixed":     {[]string{"w", "v"}, procRange{3, 3}, "3 processes of each --worker command (--worker-procs MIN:MAX to follow the backlog)"},
		"scaling":   {[]string{"w"}, procRange{2, 5}, "2 to 5 processes of each --worker command, following the backlog (--worker-procs 2:5; one is drained after --worker-idle 30s of slack)"},
	} {
		t.Run(name, func(t *testing.T) {
			f := workerFlags{commands: c.commands, procs: c.procs, idle: 30 * time.Second}
			if got := f.shown(); got != c.want {
				t.Errorf("shown() = %q, want %q", got, c.want)
			}
		})
	}
}

// pnp runner --help and pnp up --help name the MIN:MAX form and
// --worker-idle.
func TestWorkerProcsHelp(t *testing.T) {
	isolateEnv(t)
	for _, cmd := range []string{"runner", "up"} {
		code, stdout, _ := runPnp(t, cmd, "--help")
		if code != 0 || !strings.Contains(stdout, "MIN:MAX") || !strings.Contains(stdout, "-worker-idle") {
			t.Errorf("pnp %s --help (exit %d) does not explain --worker-procs MIN:MAX and --worker-idle:\n%s", cmd, code, stdout)
		}
	}
}

// pnp up --worker CMD --worker-procs 1:2: jobs submitted faster than one
// process runs them add the second process, the decision is logged, the
// second process runs some of them, and every job succeeds once.
func TestUpScalesWorkerOnJobs(t *testing.T) {
	isolateEnv(t)
	py := python.Find(t)
	sdk, err := filepath.Abs("../../sdk/python/pnpworker.py")
	if err != nil {
		t.Fatal(err)
	}
	mod, err := filepath.Abs("../../worker/testdata/scaling.py")
	if err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(t.TempDir(), "executions")
	t.Setenv("SCALING_LOG", notes)
	natsAddr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", natsAddr, "--data", t.TempDir(), "--algorithms", "none",
		"--worker", fmt.Sprintf("%s %s %s", py, sdk, mod), "--worker-procs", "1:2")
	up.waitOutput(t, "Ctrl-C stops it.")
	if want := "workers   1 to 2 processes of each --worker command, following the backlog (--worker-procs 1:2;"; !strings.Contains(up.stdout.String(), want) {
		t.Errorf("banner lacks %q:\n%s", want, up.stdout.String())
	}
	const n = 12
	for i := range n {
		if code, stdout, stderr := runPnp(t, "submit", "--server", "nats://"+natsAddr, "--id", fmt.Sprint("up-", i), "slow", fmt.Sprintf(`{"token":"up-%d","ms":800}`, i)); code != 0 {
			t.Fatalf("submit: exit %d\n%s\n%s", code, stdout, stderr)
		}
	}
	up.waitStderr(t, "worker scaled up")
	for i := range n {
		if code, stdout, stderr := runPnp(t, "result", "--server", "nats://"+natsAddr, "--wait", fmt.Sprint("up-", i)); code != 0 || !strings.Contains(stdout, "succeeded") {
			t.Fatalf("job up-%d: exit %d\n%s\n%s\npnp up:\n%s", i, code, stdout, stderr, up.stderr.String())
		}
	}
	b, err := os.ReadFile(notes)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if c := strings.Count(string(b), fmt.Sprintf("start up-%d ", i)); c != 1 {
			t.Errorf("job up-%d ran %d times", i, c)
		}
	}
	pids := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "start" {
			pids[f[2]] = true
		}
	}
	if len(pids) != 2 {
		t.Errorf("jobs ran in %d processes, want 2:\n%s", len(pids), b)
	}
	if code := up.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, up.stderr.String())
	}
}

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/jobs"
)

// decodeResult parses the record printed after the job id (submit) or
// alone (result).
func decodeResult(t *testing.T, out string) jobs.Result {
	t.Helper()
	if i := strings.IndexByte(out, '{'); i >= 0 {
		out = out[i:]
	}
	var r jobs.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not a result record: %v\n%s", err, out)
	}
	return r
}

// The job commands against a runner and a `pnp controller`: submit and
// wait, read a result, a failed job in the dead letters, a replay, the
// queue overview.
func TestJobCommands(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	startPnp(t, "controller", "--server", url, "--log-level", "warn", "--retry-backoff", "10ms")

	t.Run("submit --wait", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "cli-1", "language_detection",
			`{"text":"Guten Morgen, wie geht es dir heute? Ich hoffe, du hast gut geschlafen."}`, "--wait")
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, stderr)
		}
		if first, _, _ := strings.Cut(stdout, "\n"); first != "cli-1" {
			t.Errorf("first line %q, want the job id", first)
		}
		r := decodeResult(t, stdout)
		if r.Status != jobs.StatusSucceeded || !strings.Contains(string(r.Output), `"deu"`) {
			t.Errorf("result %+v, want succeeded with deu", r)
		}
	})
	t.Run("result", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "result", "--server", url, "cli-1")
		if code != 0 || decodeResult(t, stdout).JobID != "cli-1" {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("input from a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "job.json")
		if err := os.WriteFile(f, []byte(`{"text":"El rápido zorro marrón salta sobre el perro perezoso y sigue corriendo"}`), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--wait", "language_detection", "@"+f)
		if code != 0 || !strings.Contains(string(decodeResult(t, stdout).Output), `"spa"`) {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("invalid input fails and is dead-lettered", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "cli-bad", "--wait", "language_detection", `{"text":42}`)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
		}
		checkOneLineError(t, stderr, regexp.MustCompile(`^pnp submit: job cli-bad failed: 400 `))
		r := decodeResult(t, stdout)
		if r.Status != jobs.StatusFailed || len(r.Error.Violations) == 0 || r.Error.Violations[0].Pointer != "/text" {
			t.Errorf("result %+v, want failed with a violation at /text", r)
		}
		code, stdout, _ = runPnp(t, "dead", "ls", "--server", url, "--json")
		var letters []deadLetterJSON
		if err := json.Unmarshal([]byte(stdout), &letters); code != 0 || err != nil || len(letters) != 1 || letters[0].JobID != "cli-bad" || letters[0].Body != `{"text":42}` {
			t.Fatalf("dead ls: exit %d, %v\n%s", code, err, stdout)
		}
		code, stdout, _ = runPnp(t, "dead", "ls", "--server", url)
		if code != 0 || !strings.Contains(stdout, "cli-bad") || !strings.Contains(stdout, "language_detection") {
			t.Errorf("dead ls table:\n%s", stdout)
		}
	})
	t.Run("jobs", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "jobs", "--server", url, "--json")
		var queues []jobs.Queue
		if err := json.Unmarshal([]byte(stdout), &queues); code != 0 || err != nil {
			t.Fatalf("exit %d, %v\n%s%s", code, err, stdout, stderr)
		}
		want := jobs.Queue{Algorithm: "language_detection", Dead: 1, Runners: 1}
		if len(queues) != 1 || queues[0] != want {
			t.Errorf("queues %+v, want [%+v]", queues, want)
		}
	})
	t.Run("dead replay", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "dead", "replay", "--server", url, "cli-bad")
		if code != 0 || !strings.Contains(stdout, "cli-bad replayed") {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		// The input is still invalid: the replayed job fails again, once.
		code, stdout, _ = runPnp(t, "result", "--server", url, "--wait", "cli-bad")
		if code != 1 || decodeResult(t, stdout).Status != jobs.StatusFailed {
			t.Fatalf("replayed job: exit %d\n%s", code, stdout)
		}
		code, stdout, stderr = runPnp(t, "dead", "replay", "--server", url, "nope")
		if code != 1 || !strings.Contains(stderr, "no dead letter for job nope") {
			t.Errorf("replay of an unknown id: exit %d\n%s%s", code, stdout, stderr)
		}
	})
	t.Run("unknown result", func(t *testing.T) {
		code, _, stderr := runPnp(t, "result", "--server", url, "never-submitted")
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		checkOneLineError(t, stderr, regexp.MustCompile(`^pnp result: no result for job never-submitted`))
	})
	t.Run("stock nats CLI", func(t *testing.T) {
		nats, err := exec.LookPath("nats")
		if err != nil {
			t.Skip("nats CLI not installed")
		}
		// No nats context of whoever runs the tests may redirect the CLI.
		t.Setenv("HOME", t.TempDir())
		t.Setenv("XDG_CONFIG_HOME", t.TempDir())
		out, err := exec.Command(nats, "-s", url, "pub", "jobs.language_detection",
			`{"text":"Le renard brun saute par-dessus le chien paresseux"}`, "-H", "Nats-Msg-Id:abc").CombinedOutput()
		if err != nil {
			t.Fatalf("nats pub: %v\n%s", err, out)
		}
		if code, stdout, stderr := runPnp(t, "result", "--server", url, "--wait", "abc"); code != 0 {
			t.Fatalf("result abc: exit %d\n%s%s", code, stdout, stderr)
		}
		out, err = exec.Command(nats, "-s", url, "kv", "get", "results", "abc", "--raw").CombinedOutput()
		if err != nil {
			t.Fatalf("nats kv get: %v\n%s", err, out)
		}
		if r := decodeResult(t, string(out)); r.JobID != "abc" || r.Status != jobs.StatusSucceeded || !strings.Contains(string(r.Output), `"fra"`) {
			t.Errorf("nats kv get results abc: %s", out)
		}
	})
}

func TestJobCommandUsage(t *testing.T) {
	isolateEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"submit without input", []string{"submit", "language_detection"}, `^pnp submit: usage: want <algorithm> and <json \| @file \| ->`},
		{"dead without subcommand", []string{"dead"}, `^pnp dead: usage: missing subcommand`},
		{"dead replay without ids", []string{"dead", "replay"}, `^pnp dead: usage: name the job ids to replay, or --all`},
		{"dead replay ids and --all", []string{"dead", "replay", "x", "--all"}, `^pnp dead: usage: name the job ids`},
		{"result without id", []string{"result"}, `^pnp result: usage: want one job id`},
		{"controller bad config", []string{"controller", "--max-attempts", "-1"}, `^pnp controller: usage: max attempts -1 is negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runPnp(t, tt.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, stderr)
			}
			checkOneLineError(t, stderr, regexp.MustCompile(tt.want))
		})
	}
}

// `pnp up` runs a controller too: a job submitted to it completes.
func TestUpRunsJobs(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn")
	up.waitOutput(t, "Ctrl-C stops it.")
	if out := up.stdout.String(); !strings.Contains(out, "pub jobs.language_detection") || !strings.Contains(out, "kv get --raw results hello") {
		t.Errorf("banner lacks the job walkthrough:\n%s", out)
	}
	code, stdout, stderr := runPnp(t, "submit", "--server", url, "--wait", "language_detection", `{"text":"Le renard brun saute par-dessus le chien paresseux"}`)
	if code != 0 || decodeResult(t, stdout).Status != jobs.StatusSucceeded {
		t.Fatalf("submit --wait: exit %d\n%s%s", code, stdout, stderr)
	}
	if code := up.stop(t); code != 0 {
		t.Fatalf("pnp up: exit %d after cancellation\n%s", code, up.stderr.String())
	}
}

// Submitting to an algorithm nobody serves: a refusal naming the closest
// known name when nobody ever served or declared it, a warning on stderr
// with --allow-unknown, a refusal with --require-runner, and
// --wait-timeout ends the wait with exit 1 and a message saying what to
// do.
func TestSubmitNobodyServes(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)

	code, stdout, stderr := runPnp(t, "submit", "--server", url, "--require-runner", "language_detection", `{"text":"hello"}`)
	if code != 0 || stderr != "" {
		t.Errorf("submit to a served algorithm: exit %d\nstderr: %s\nwant exit 0 and no warning", code, stderr)
	}
	// A name no runner ever registered and nobody declared: a typo.
	code, stdout, stderr = runPnp(t, "submit", "--server", url, "--id", "typo-1", "language_detecton", `{}`)
	if code != 1 || stdout != "" {
		t.Errorf("submit to an unknown algorithm: exit %d, stdout %q; want a refusal", code, stdout)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp submit: unknown algorithm "language_detecton": .*did you mean language_detection\?; not submitted`))
	if code, _, stderr := runPnp(t, "cancel", "--server", url, "typo-1"); code != 1 || !strings.Contains(stderr, "no job typo-1") {
		t.Errorf("the refused job was stored: cancel exit %d: %s", code, stderr)
	}

	code, stdout, stderr = runPnp(t, "submit", "--server", url, "--id", "nope-1", "--allow-unknown", "nope", `{}`)
	if code != 0 || strings.TrimSpace(stdout) != "nope-1" || !strings.Contains(stderr, "no runner is registered for nope") {
		t.Errorf("submit: exit %d\nstdout: %s\nstderr: %s\nwant exit 0 and a warning", code, stdout, stderr)
	}

	code, stdout, stderr = runPnp(t, "submit", "--server", url, "--id", "nope-2", "--require-runner", "--allow-unknown", "nope", `{}`)
	if code == 0 || stdout != "" {
		t.Errorf("submit --require-runner: exit %d, stdout %q; want a refusal", code, stdout)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp submit: no runner is registered for nope; not submitted`))

	code, stdout, stderr = runPnp(t, "submit", "--server", url, "--id", "nope-3", "--wait-timeout", "300ms", "--allow-unknown", "nope", `{}`)
	if code != 1 || strings.TrimSpace(stdout) != "nope-3" {
		t.Errorf("submit --wait-timeout: exit %d, stdout %q; want 1 and the job id", code, stdout)
	}
	checkOneLineError(t, lastLine(stderr), regexp.MustCompile(`^pnp submit: no result for job nope-3 after \S+: it is still waiting`))
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1] + "\n"
}

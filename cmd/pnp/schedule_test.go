package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/jobs"
)

// Delayed jobs and schedules through the CLI against a runner and a
// `pnp controller`: submit --in reports scheduled, then runs; schedule
// add, ls, rm; a schedule's runs are jobs named after it.
func TestScheduleCommands(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	startPnp(t, "controller", "--server", url, "--log-level", "warn")
	const text = `{"text":"Guten Morgen, wie geht es dir heute? Ich hoffe, du hast gut geschlafen."}`

	t.Run("submit --in", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "later", "--in", "1h", "language_detection", text)
		if code != 0 || strings.TrimSpace(stdout) != "later" || !strings.Contains(stderr, "scheduled for") {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, stderr = runPnp(t, "result", "--server", url, "later")
		r := decodeResult(t, stdout)
		if code != 0 || r.Status != jobs.StatusScheduled || r.NotBefore == nil || r.NotBefore.Before(time.Now().Add(59*time.Minute)) {
			t.Fatalf("pnp result of a delayed job: exit %d %+v\n%s", code, r, stderr)
		}
	})
	t.Run("submit --in --wait", func(t *testing.T) {
		start := time.Now()
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "soon", "--in", "2s", "--wait", "language_detection", text)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		r := decodeResult(t, stdout)
		if r.Status != jobs.StatusSucceeded || r.StartedAt.Before(start.Add(time.Second)) {
			t.Errorf("result %+v, want succeeded, started 2 s after %s", r, start)
		}
	})
	t.Run("submit --priority", func(t *testing.T) {
		for _, p := range []string{"high", "low"} {
			code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "prio-"+p, "--priority", p, "--wait", "language_detection", text)
			if r := decodeResult(t, stdout); code != 0 || r.Status != jobs.StatusSucceeded {
				t.Errorf("--priority %s: exit %d %+v\n%s", p, code, r, stderr)
			}
		}
	})
	t.Run("submit --at", func(t *testing.T) {
		at := time.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", "at", "--at", at.Format(time.RFC3339), "language_detection", text)
		if code != 0 {
			t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
		}
		_, stdout, _ = runPnp(t, "result", "--server", url, "at")
		if r := decodeResult(t, stdout); r.Status != jobs.StatusScheduled || !r.NotBefore.Equal(at) {
			t.Errorf("result %+v, want scheduled at %s", r, at)
		}
	})
	t.Run("schedule add ls rm", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "schedule", "add", "--server", url, "--every", "1s", "greet", "language_detection", text)
		if code != 0 || !strings.Contains(stdout, "schedule greet stored") {
			t.Fatalf("add: exit %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, stderr = runPnp(t, "schedule", "add", "--server", url, "--cron", "0 0 3 * * *", "nightly", "language_detection", text)
		if code != 0 {
			t.Fatalf("add cron: exit %d\n%s%s", code, stdout, stderr)
		}
		code, stdout, _ = runPnp(t, "schedule", "ls", "--server", url)
		if code != 0 || !regexp.MustCompile(`(?m)^greet\s+language_detection\s+@every 1s\s+\d{4}-`).MatchString(stdout) ||
			!regexp.MustCompile(`(?m)^nightly\s+language_detection\s+0 0 3 \* \* \*\s+\d{4}-\d\d-\d\d 0?\d:`).MatchString(stdout) {
			t.Errorf("ls:\n%s", stdout)
		}
		_, stdout, _ = runPnp(t, "schedule", "ls", "--json", "--server", url)
		var list []map[string]any
		if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list) != 2 || list[0]["every"] != "1s" || list[1]["cron"] != "0 0 3 * * *" || list[1]["next_run"] == nil {
			t.Errorf("ls --json: %v\n%s", err, stdout)
		}
		// A run of greet: a job greet-<time> with the schedule's input.
		nc, err := nats.Connect(url)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		runID := regexp.MustCompile(`^greet-\d{8}T\d{6}Z$`)
		deadline := time.Now().Add(30 * time.Second)
		found := ""
		for found == "" && time.Now().Before(deadline) {
			ids, _ := resultKeys(nc)
			for _, id := range ids {
				if runID.MatchString(id) {
					found = id
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if found == "" {
			t.Fatal("no run of schedule greet within 30 s")
		}
		code, stdout, stderr = runPnp(t, "result", "--server", url, "--wait-timeout", "30s", found)
		if r := decodeResult(t, stdout); code != 0 || r.Status != jobs.StatusSucceeded || !strings.Contains(string(r.Output), `"deu"`) {
			t.Errorf("run %s: exit %d %+v\n%s", found, code, r, stderr)
		}
		for _, name := range []string{"greet", "nightly"} {
			if code, stdout, stderr := runPnp(t, "schedule", "rm", "--server", url, name); code != 0 {
				t.Errorf("rm %s: exit %d\n%s%s", name, code, stdout, stderr)
			}
		}
		code, _, stderr = runPnp(t, "schedule", "rm", "--server", url, "greet")
		if code != 1 || !strings.Contains(stderr, "no such schedule") {
			t.Errorf("rm twice: exit %d\n%s", code, stderr)
		}
		if _, _, stderr := runPnp(t, "schedule", "ls", "--server", url); !strings.Contains(stderr, "no schedules") {
			t.Errorf("ls after rm: %s", stderr)
		}
	})
}

// resultKeys lists the keys of the results bucket.
func resultKeys(nc *nats.Conn) ([]string, error) {
	js, err := nc.JetStream()
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(jobs.ResultsBucket)
	if err != nil {
		return nil, err
	}
	return kv.Keys()
}

func TestScheduleCommandUsage(t *testing.T) {
	isolateEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"submit --in and --at", []string{"submit", "--in", "1m", "--at", "2030-01-01T00:00:00Z", "a", "{}"}, `^pnp submit: usage: --in and --at: give one, not both`},
		{"submit --at not a time", []string{"submit", "--at", "tomorrow", "a", "{}"}, `^pnp submit: usage: --at "tomorrow": want an RFC 3339 time`},
		{"submit --in negative", []string{"submit", "--in", "-1m", "a", "{}"}, `^pnp submit: usage: --in -1m0s is negative`},
		{"submit --priority unknown", []string{"submit", "--priority", "urgent", "a", "{}"}, `^pnp submit: usage: --priority "urgent": want high, normal or low`},
		{"schedule add bad priority", []string{"schedule", "add", "--every", "1m", "--priority", "top", "n", "alg", "{}"}, `^pnp schedule: usage: priority "top": want high, normal or low`},
		{"schedule without subcommand", []string{"schedule"}, `^pnp schedule: usage: missing subcommand`},
		{"schedule unknown", []string{"schedule", "list"}, `^pnp schedule: usage: unknown subcommand "list"`},
		{"schedule add neither", []string{"schedule", "add", "n", "alg", "{}"}, `^pnp schedule: usage: every or cron: give one`},
		{"schedule add both", []string{"schedule", "add", "--every", "1m", "--cron", "@daily", "n", "alg", "{}"}, `^pnp schedule: usage: every and cron: give one, not both`},
		{"schedule add bad cron", []string{"schedule", "add", "--cron", "* * *", "n", "alg", "{}"}, `^pnp schedule: usage: cron "\* \* \*": want six fields`},
		{"schedule add short", []string{"schedule", "add", "--every", "500ms", "n", "alg", "{}"}, `^pnp schedule: usage: every 500ms: want at least 1s`},
		{"schedule add bad name", []string{"schedule", "add", "--every", "1m", "a.b", "alg", "{}"}, `^pnp schedule: usage: name "a.b": want 1 to 64 letters`},
		{"schedule add auto", []string{"schedule", "add", "--every", "1m", "auto", "alg", "{}"}, `^pnp schedule: usage: name "auto"`},
		{"schedule add bad input", []string{"schedule", "add", "--every", "1m", "n", "alg", "{"}, `^pnp schedule: usage: input: not valid JSON`},
		{"schedule rm without name", []string{"schedule", "rm"}, `^pnp schedule: usage: want one schedule name`},
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

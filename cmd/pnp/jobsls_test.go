package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/pnpworker/pnpworker/jobs"
)

// `pnp jobs ls` against a runner and a `pnp controller`: the jobs by their
// records, newest first, filtered, paged with the printed cursor, as JSON,
// and bad flags named.
func TestJobsLs(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	startPnp(t, "controller", "--server", url, "--log-level", "warn")
	for i := range 5 {
		input := `{"text":"Guten Morgen, wie geht es dir heute? Ich hoffe, du hast gut geschlafen."}`
		want := 0
		if i == 3 {
			input, want = `{"text":42}`, 1
		}
		// One at a time, so the records are written in this order.
		if code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", fmt.Sprintf("ls-%d", i), "--wait-timeout", "60s", "language_detection", input); code != want {
			t.Fatalf("submit ls-%d: exit %d\n%s%s", i, code, stdout, stderr)
		}
	}
	ids := func(out string) string {
		var got []string
		for _, m := range regexp.MustCompile(`(?m)^(ls-\d)\s`).FindAllStringSubmatch(out, -1) {
			got = append(got, m[1])
		}
		return strings.Join(got, ",")
	}

	code, stdout, stderr := runPnp(t, "jobs", "ls", "--server", url)
	if code != 0 || ids(stdout) != "ls-4,ls-3,ls-2,ls-1,ls-0" {
		t.Fatalf("jobs ls: exit %d\n%s%s", code, stdout, stderr)
	}
	if !strings.HasPrefix(stdout, "JOB ") || !regexp.MustCompile(`(?m)^ls-3\s+language_detection\s+failed\s+0\s+-\s+.*400 input does not match`).MatchString(stdout) {
		t.Errorf("table:\n%s", stdout)
	}

	code, stdout, stderr = runPnp(t, "jobs", "ls", "--server", url, "--status", "succeeded", "--algorithm", "language_detection", "--since", "1h", "--limit", "2")
	m := regexp.MustCompile(`more: pnp jobs ls --cursor (\S+) `).FindStringSubmatch(stderr)
	if code != 0 || ids(stdout) != "ls-4,ls-2" || m == nil {
		t.Fatalf("first page: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runPnp(t, "jobs", "ls", "--server", url, "--status", "succeeded", "--limit", "2", "--cursor", m[1], "--json")
	var page jobs.JobPage
	if err := json.Unmarshal([]byte(stdout), &page); code != 0 || err != nil {
		t.Fatalf("second page: exit %d, %v\n%s%s", code, err, stdout, stderr)
	}
	if len(page.Jobs) != 2 || page.Jobs[0].JobID != "ls-1" || page.Jobs[1].JobID != "ls-0" || page.Jobs[0].Version == "" || len(page.Jobs[0].Output) != 0 {
		t.Errorf("second page: %+v", page)
	}

	code, stdout, stderr = runPnp(t, "jobs", "ls", "--server", url, "--limit", "1", "--all")
	if code != 0 || ids(stdout) != "ls-4,ls-3,ls-2,ls-1,ls-0" || strings.Contains(stderr, "more:") {
		t.Errorf("--all: exit %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runPnp(t, "jobs", "ls", "--server", url, "--algorithm", "other")
	if code != 0 || !strings.Contains(stderr, "no jobs") {
		t.Errorf("another algorithm: exit %d\n%s", code, stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--status", "done"}, `--status: "done" is not a status; want one of succeeded, failed, retrying, cancelled`},
		{[]string{"--limit", "0"}, "--limit: 0 is out of range"},
		{[]string{"--since", "yesterday", "--algorithm", "Bad"}, `--algorithm: "Bad" is not an algorithm name`},
		{[]string{"--cursor", "xyz"}, "--cursor: not a cursor this listing returned"},
		{[]string{"--cursor", "xyz", "--all"}, "--all: follows the pages"},
		{[]string{"extra"}, "ls takes no arguments"},
	} {
		code, _, stderr := runPnp(t, append([]string{"jobs", "ls", "--server", url}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, want 2 and %q\n%s", tc.args, code, tc.want, stderr)
		}
	}
}

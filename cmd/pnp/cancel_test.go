package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/pnpworker/pnpworker/jobs"
)

// pnp cancel, pnp jobs purge and pnp algorithms declare against a runner
// and a `pnp controller`.
func TestCancelCommands(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	startPnp(t, "controller", "--server", url, "--log-level", "warn")

	// The controller provisions the served bucket as it starts.
	for deadline := time.Now().Add(pnpTimeout); ; {
		code, stdout, stderr := runPnp(t, "algorithms", "declare", "--server", url, "later_algo")
		if code == 0 && stdout == "later_algo declared\n" {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(stderr, "does not exist yet") {
			t.Fatalf("declare: exit %d\n%s%s", code, stdout, stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"w-1", "w-2", "w-3"} {
		if code, _, stderr := runPnp(t, "submit", "--server", url, "--id", id, "later_algo", `{}`); code != 0 || !strings.Contains(stderr, "no runner is registered for later_algo") {
			t.Fatalf("submit to a declared algorithm: exit %d: %s", code, stderr)
		}
	}
	if code, stdout, stderr := runPnp(t, "cancel", "--server", url, "w-1"); code != 0 || stdout != "w-1 cancelled\n" {
		t.Fatalf("cancel: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr := runPnp(t, "result", "--server", url, "w-1")
	if r := decodeResult(t, stdout); code != 0 || r.Status != jobs.StatusCancelled || r.Algorithm != "later_algo" {
		t.Fatalf("result of a cancelled job: exit %d, %+v: %s", code, r, stderr)
	}
	code, _, stderr = runPnp(t, "cancel", "--server", url, "w-1")
	if code != 1 {
		t.Fatalf("second cancel: exit %d, want 1", code)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp cancel: job w-1 already finished: cancelled$`))
	code, _, stderr = runPnp(t, "cancel", "--server", url, "never-submitted")
	if code != 1 {
		t.Fatalf("cancel of an unknown job: exit %d, want 1", code)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp cancel: no job never-submitted: `))

	if code, _, stderr := runPnp(t, "submit", "--server", url, "--id", "done-1", "--wait", "language_detection", `{"text":"Guten Morgen, wie geht es dir heute?"}`); code != 0 {
		t.Fatalf("submit --wait: exit %d: %s", code, stderr)
	}
	code, _, stderr = runPnp(t, "cancel", "--server", url, "done-1")
	if code != 1 {
		t.Fatalf("cancel of a finished job: exit %d, want 1", code)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp cancel: job done-1 already finished: succeeded$`))

	// The cancelled job of an algorithm nobody serves waits in JOBS, like
	// the others, until a controller retires it: purge drops all three.
	if code, stdout, stderr := runPnp(t, "jobs", "purge", "--server", url, "later_algo"); code != 0 || stdout != "3 waiting jobs of later_algo purged\n" {
		t.Fatalf("purge: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = runPnp(t, "jobs", "--server", url, "--json")
	var queues []jobs.Queue
	if err := json.Unmarshal([]byte(stdout), &queues); code != 0 || err != nil {
		t.Fatalf("jobs --json: exit %d, %v: %s", code, err, stdout)
	}
	for _, q := range queues {
		if q.Algorithm == "later_algo" && q.Waiting+q.InFlight > 0 {
			t.Fatalf("later_algo still has jobs after purge: %+v", q)
		}
	}
	code, _, stderr = runPnp(t, "cancel", "--server", url, "w-2")
	if code != 1 || !strings.Contains(stderr, "no job w-2") {
		t.Fatalf("a purged job: exit %d: %s", code, stderr)
	}
}

func TestCancelCommandUsage(t *testing.T) {
	isolateEnv(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cancel without id", []string{"cancel"}, `^pnp cancel: usage: want one or more job ids`},
		{"cancel of an invalid id", []string{"cancel", "a b"}, `^pnp cancel: usage: "a b" cannot name a job`},
		{"purge without algorithm", []string{"jobs", "purge"}, `^pnp jobs: usage: want one algorithm`},
		{"purge of an invalid name", []string{"jobs", "purge", "Bad-Name"}, `^pnp jobs: usage: "Bad-Name" is not an algorithm name`},
		{"declare without name", []string{"algorithms", "declare"}, `^pnp algorithms: usage: want one or more algorithm names`},
		{"declare of an invalid name", []string{"algorithms", "declare", "Bad-Name"}, `^pnp algorithms: usage: "Bad-Name" is not an algorithm name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runPnp(t, tc.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, stderr)
			}
			checkOneLineError(t, stderr, regexp.MustCompile(tc.want))
		})
	}
}

// TestDashboardCancelInBrowser: the page of a waiting job on the dashboard
// offers Cancel, which cancels it; the page, the job list and the events
// show it cancelled.
func TestDashboardCancelInBrowser(t *testing.T) {
	ctx := browser(t)
	natsAddr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", natsAddr, "--data", t.TempDir(), "--http", "127.0.0.1:0",
		"--algorithms", "image_info", "--log-level", "error")
	up.waitOutput(t, "Ctrl-C stops it.")
	m := regexp.MustCompile(`dashboard (http://[0-9.:]+)/`).FindStringSubmatch(up.stdout.String())
	if m == nil {
		t.Fatalf("no dashboard URL in the banner:\n%s", up.stdout.String())
	}
	base := m[1]
	if code, _, stderr := runPnp(t, "algorithms", "declare", "--server", "nats://"+natsAddr, "later_algo"); code != 0 {
		t.Fatalf("declare: exit %d: %s", code, stderr)
	}
	req, _ := http.NewRequest("POST", base+"/v1/algorithms/later_algo/jobs", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "browser-cancel")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("submit: %d %s", resp.StatusCode, b)
	}
	step(t, ctx, "the job's page shows the waiting job with a Cancel button",
		chromedp.Navigate(base+"/#job/browser-cancel"),
		until(`document.getElementById("live").textContent === "live"`),
		until(`/still waiting/.test(document.querySelector('#job-body [data-role="job-error"]')?.textContent)`),
		until(`!document.getElementById("cancel-job").hidden`),
	)
	step(t, ctx, "Cancel cancels it, the page shows it cancelled, and its event arrives",
		chromedp.Click(chromedp.CSS("#cancel-job")),
		until(`document.querySelector('#job-body [data-col="status"]')?.textContent === "cancelled"`),
		until(`document.getElementById("cancel-job").hidden`),
		until(`document.getElementById("cancel-note").textContent === "cancelled"`),
		until(`[...document.querySelectorAll("#events li")].some(li => /cancelled browser-cancel \(later_algo\)/.test(li.textContent))`),
		until(`!!document.querySelector('#jobs tr[data-job="browser-cancel"]')`),
	)
	resp, err = http.Get(base + "/v1/jobs/browser-cancel")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var res jobs.Result
	if err := json.Unmarshal(b, &res); err != nil || res.Status != jobs.StatusCancelled {
		t.Fatalf("after the button: %d %s", resp.StatusCode, b)
	}
}

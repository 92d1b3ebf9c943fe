package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/runner"
)

// chromiumPath is where Debian's chromium package puts the browser;
// PNP_CHROMIUM overrides it.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium for the test, or skips the test when
// there is none — except in CI, where a missing browser is a failure.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := env("PNP_CHROMIUM", chromiumPath)
	if _, err := exec.LookPath(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found at %s (CI installs the Debian package chromium): %v", path, err)
		}
		t.Skipf("chromium not found at %s: install it (apt-get install chromium) or set PNP_CHROMIUM; skipping the browser test", path)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 1300),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// step runs browser actions with a time limit and fails the test with what
// was being checked.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		defer tcancel()
		body, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("main")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, body)
	}
}

// until polls a JavaScript expression until it is true.
func until(expr string) chromedp.Action[chromedp.Void] {
	poll := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := poll(ctx, t)
		return chromedp.Void{}, err
	}
}

// clickWhen clicks the element that selector names as soon as it is
// in the page, finding and clicking it in one evaluation: rows of the
// live tables are re-rendered as events arrive, and a node found by one
// DevTools call may be gone by the next.
func clickWhen(selector string) chromedp.Action[chromedp.Void] {
	sel, _ := json.Marshal(selector)
	return until(`(() => { const e = document.querySelector(` + string(sel) + `); if (!e) return false; e.click(); return true })()`)
}

// TestDashboardInBrowser drives the dashboard of `pnp up` in headless
// Chromium: it lists the built-in algorithms, the try-it form of
// language_detection answers French and shows a wrong type's violation
// next to the field, a route set from the command line shows up, a dead
// letter's replay button produces a result, and a runner that stops
// disappears without a reload. With PNP_SCREENSHOT
// set to a path, the dashboard is saved there (docs/img/dashboard.png).
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	natsAddr, _ := freeLoopbackAddr(t)
	// pnp up serves the image algorithms; language_detection comes from a
	// runner of the test's own, so that stopping it is a departure, and a
	// job submitted before it exists expires into a dead letter.
	up := startPnp(t, "up", "--listen", natsAddr, "--data", t.TempDir(), "--http", "127.0.0.1:0",
		"--algorithms", "meme_classifier,image_info", "--max-job-age", "1s", "--log-level", "error")
	up.waitOutput(t, "Ctrl-C stops it.")
	m := regexp.MustCompile(`dashboard (http://[0-9.:]+)/`).FindStringSubmatch(up.stdout.String())
	if m == nil {
		t.Fatalf("no dashboard URL in the banner:\n%s", up.stdout.String())
	}
	base := m[1]
	natsURL := "nats://" + natsAddr

	post := func(path, body string, hdr map[string]string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// A job nobody serves yet, of an algorithm declared so that its jobs
	// are accepted: it expires after --max-job-age into DEAD.
	if code, _, stderr := runPnp(t, "algorithms", "declare", "--server", natsURL, "language_detection"); code != 0 {
		t.Fatalf("declare: exit %d: %s", code, stderr)
	}
	if code, b := post("/v1/algorithms/language_detection/jobs", `{"text":"Die Mannschaften schreiben Algorithmen und wollen sie auf neue Daten anwenden"}`,
		map[string]string{"Idempotency-Key": "late-job"}); code != 202 {
		t.Fatalf("submit: %d %s", code, b)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, b := get("/v1/dead")
		if strings.Contains(string(b), `"late-job"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter for late-job: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	extra := startPnp(t, "runner", "--server", natsURL, "--algorithms", "language_detection", "--log-level", "error")

	step(t, ctx, "the dashboard lists the built-in algorithms",
		chromedp.Navigate(base+"/"),
		until(`["language_detection","meme_classifier","image_info"].every(n => document.querySelector('#algorithms tr[data-algorithm="'+n+'"]'))`),
		until(`document.getElementById("live").textContent === "live"`),
		// A mark that a reload would wipe.
		until(`(window.pnpTestMark = 1) === 1`),
	)

	form := `details[data-algorithm="language_detection"] `
	step(t, ctx, "try it: language_detection answers French",
		chromedp.Click(chromedp.CSS(form+"summary")),
		chromedp.SendKeys(chromedp.CSS(form+`textarea[name="text"]`), "Le renard brun saute par-dessus le chien paresseux"),
		chromedp.Click(chromedp.CSS(form+`button[type="submit"]`)),
		until(`document.querySelector('`+form+`[data-role="status"]').textContent === "200"`),
		until(`/"language": "fr/.test(document.querySelector('`+form+`[data-role="reply"]').textContent)`),
	)
	meme := `details[data-algorithm="meme_classifier"] `
	sample, err := filepath.Abs("../../algo/meme_classifier/demo/samples/drake_pref_captioned.jpg")
	if err != nil {
		t.Fatal(err)
	}
	step(t, ctx, "try it: a file uploaded from the form is classified by reference",
		chromedp.Click(chromedp.CSS(meme+"summary")),
		chromedp.SetUploadFiles(chromedp.CSS(meme+`input[type="file"]`), []string{sample}),
		until(`/^obj:\/\/uploads\/.+\/drake_pref_captioned\.jpg$/.test(document.querySelector('`+meme+`[name="image_url"]').value)`),
		chromedp.Click(chromedp.CSS(meme+`button[type="submit"]`)),
		until(`document.querySelector('`+meme+`[data-role="status"]').textContent === "200"`),
		until(`/"label": "drake_pref"/.test(document.querySelector('`+meme+`[data-role="reply"]').textContent)`),
	)
	step(t, ctx, "the runner's stats and the gateway's latency show the request",
		until(`document.querySelector('#algorithms tr[data-algorithm="language_detection"] [data-col="served"]').textContent === "1"`),
		until(`/ms$/.test(document.querySelector('#algorithms tr[data-algorithm="language_detection"] [data-col="p50"]').textContent)`),
	)
	step(t, ctx, "without routes, the versions table says so",
		until(`/no routes/.test(document.querySelector('#routes tbody').textContent)`),
	)
	if code, _, stderr := runPnp(t, "route", "set", "image_info", "--stable", "1.0.0", "--shadow", "2.0.0", "--server", natsURL); code != 0 {
		t.Fatalf("route set: exit %d: %s", code, stderr)
	}
	step(t, ctx, "a route set with pnp route set shows up, with its shadow not compared yet",
		until(`document.querySelector('#routes tr[data-algorithm="image_info"] [data-col="stable"]')?.textContent === "1.0.0"`),
		until(`document.querySelector('#routes tr[data-algorithm="image_info"] [data-col="agreement"]').textContent === "no comparison yet"`),
	)
	if code, b := post("/v1/schedules", `{"name":"nightly-info","algorithm":"image_info","cron":"0 30 2 * * *","input":{"image_url":"obj://inputs/none"}}`, nil); code != 201 {
		t.Fatalf("add schedule: %d %s", code, b)
	}
	step(t, ctx, "a schedule added over the API is listed with its next run",
		until(`document.querySelector('#schedules tr[data-schedule="nightly-info"] [data-col="spec"]')?.textContent === "0 30 2 * * *"`),
		until(`new Date(document.querySelector('#schedules tr[data-schedule="nightly-info"] [data-col="next"]').textContent).getTime() > Date.now() - 1000`),
	)
	step(t, ctx, "the dead letter is listed with its reason",
		until(`/expired/.test((document.querySelector('#dead tr[data-job="late-job"] .reason') || {}).textContent)`),
	)
	if path := os.Getenv("PNP_SCREENSHOT"); path != "" {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	step(t, ctx, "try it: a wrong type shows the violation next to the field",
		chromedp.SetValue(chromedp.CSS(form+`textarea[data-role="body"]`), `{"text":42}`),
		chromedp.Click(chromedp.CSS(form+`button[type="submit"]`)),
		until(`document.querySelector('`+form+`[data-role="status"]').textContent === "400"`),
		until(`/string/.test(document.querySelector('`+form+`.field[data-field="text"] .violation').textContent)`),
	)
	step(t, ctx, "replay: the dead letter's button produces a result",
		clickWhen(`#dead button.replay[data-job="late-job"]`),
		until(`!document.querySelector('#dead tr[data-job="late-job"]')`),
		until(`[...document.querySelectorAll("#events li")].some(li => /succeeded late-job/.test(li.textContent))`),
	)
	code, b := get("/v1/jobs/late-job?wait=20s")
	var res struct{ Status string }
	if err := json.Unmarshal(b, &res); err != nil || code != 200 || res.Status != "succeeded" {
		t.Fatalf("late-job after replay: %d %s", code, b)
	}

	// Jobs with records after the page loaded: the job list follows them.
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, j := range []struct{ id, body string }{
		{"page-job", `{"text":"Guten Morgen, wie geht es dir heute? Ich hoffe, du hast gut geschlafen."}`},
		{"bad-job", `{"text":42}`},
	} {
		if code, b := post("/v1/algorithms/language_detection/jobs", j.body, map[string]string{"Idempotency-Key": j.id, "traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}); code != 202 {
			t.Fatalf("submit %s: %d %s", j.id, code, b)
		}
		if code, b := get("/v1/jobs/" + j.id + "?wait=20s"); code != 200 {
			t.Fatalf("%s: %d %s", j.id, code, b)
		}
	}
	step(t, ctx, "the job list shows the jobs by their records, newest first, without a reload",
		until(`[...document.querySelectorAll("#jobs tbody tr")].map(tr => tr.dataset.job).join() === "bad-job,page-job,late-job"`),
		until(`document.querySelector('#jobs tr[data-job="bad-job"] [data-col="status"]').textContent === "failed"`),
	)
	step(t, ctx, "the status filter keeps the failed job",
		chromedp.SetValue(chromedp.CSS(`#jobs-status`), "failed"),
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`[...document.querySelectorAll("#jobs tbody tr")].map(tr => tr.dataset.job).join() === "bad-job"`),
	)
	step(t, ctx, "a bad algorithm name in the filter is named",
		chromedp.SetValue(chromedp.CSS(`#jobs-algorithm`), "No"),
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`/query parameter algorithm/.test(document.getElementById("jobs-note").textContent)`),
		chromedp.SetValue(chromedp.CSS(`#jobs-algorithm`), "language_detection"),
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`document.getElementById("jobs-note").textContent === "" && !!document.querySelector('#jobs tr[data-job="bad-job"]')`),
	)
	step(t, ctx, "the failed job's page shows its input, error and violation",
		clickWhen(`#jobs tr[data-job="bad-job"] a.job-link`),
		until(`!document.getElementById("job-page").hidden && document.getElementById("job-title").textContent === "Job bad-job"`),
		until(`/400 input does not match the schema/.test(document.querySelector('#job-page [data-role="job-failure"]').textContent)`),
		until(`/\/text/.test(document.querySelector('#job-page [data-role="job-failure"] li').textContent)`),
		until(`JSON.parse(document.querySelector('#job-page [data-role="job-input"]').textContent).text === 42`),
		until(`document.querySelector('#job-page [data-col="attempts"]').textContent === "0"`),
	)
	step(t, ctx, "the succeeded job's page shows its output, the version that answered and the trace id",
		chromedp.SetValue(chromedp.CSS(`#jobs-status`), ""),
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`!!document.querySelector('#jobs tr[data-job="page-job"] a.job-link')`),
		clickWhen(`#jobs tr[data-job="page-job"] a.job-link`),
		until(`document.getElementById("job-title").textContent === "Job page-job"`),
		until(`document.querySelector('#job-page [data-col="trace_id"]').textContent === "`+traceID+`"`),
		until(`/^\d+\.\d+\.\d+/.test(document.querySelector('#job-page [data-col="version"]').textContent)`),
		until(`/"language": "de/.test(document.querySelector('#job-page [data-role="job-output"]').textContent)`),
		until(`/Guten Morgen/.test(document.querySelector('#job-page [data-role="job-input"]').textContent)`),
		until(`document.querySelector('#job-page [data-col="finished_at"]').textContent !== "–"`),
		chromedp.Click(chromedp.CSS(`#job-page a[href="#"]`)),
		until(`document.getElementById("job-page").hidden`),
	)
	// More than a page (25) of records: the More button pages on.
	for i := range 25 {
		if code, b := post("/v1/algorithms/language_detection/jobs", `{"text":"Le renard brun saute par-dessus le chien paresseux"}`,
			map[string]string{"Idempotency-Key": fmt.Sprintf("many-%02d", i)}); code != 202 {
			t.Fatalf("submit many-%02d: %d %s", i, code, b)
		}
	}
	for i := range 25 {
		if code, b := get(fmt.Sprintf("/v1/jobs/many-%02d?wait=20s", i)); code != 200 {
			t.Fatalf("many-%02d: %d %s", i, code, b)
		}
	}
	step(t, ctx, "More loads the next page of the listing",
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`document.querySelectorAll("#jobs tbody tr").length === 25 && !document.getElementById("jobs-more").hidden`),
		clickWhen(`#jobs-more`),
		until(`document.querySelectorAll("#jobs tbody tr").length === 28 && document.getElementById("jobs-more").hidden`),
		until(`[...document.querySelectorAll("#jobs tbody tr")].slice(-3).map(tr => tr.dataset.job).join() === "bad-job,page-job,late-job"`),
	)

	// A job that reports progress and waits: its row and its page show a
	// bar, updated live, until its outcome replaces it.
	step(t, ctx, "the job list filtered to an algorithm without records yet",
		chromedp.SetValue(chromedp.CSS(`#jobs-algorithm`), "stepwise"),
		chromedp.Click(chromedp.CSS(`#jobs-filter button[type="submit"]`)),
		until(`document.querySelectorAll("#jobs tbody tr.empty").length === 1`),
	)
	next, release := make(chan struct{}), make(chan struct{})
	stepwise := runner.Must(runner.NewAlgorithm(runner.Spec{
		Name: "stepwise", Version: "1.0.0", InputSchema: []byte(`{"type":"object"}`), OutputSchema: []byte(`{"type":"object"}`), Timeout: time.Minute,
	}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		for _, s := range []struct {
			f    float64
			msg  string
			wait chan struct{}
		}{{0.4, "resizing tiles", next}, {0.8, "writing tiles", release}} {
			if err := runner.Progress(ctx, s.f, s.msg); err != nil {
				return struct{}{}, err
			}
			select {
			case <-s.wait:
			case <-ctx.Done():
				return struct{}{}, ctx.Err()
			}
		}
		return struct{}{}, nil
	}))
	rnc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer rnc.Close()
	stepRunner, err := runner.New(rnc, []*runner.Algorithm{stepwise})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stopRunner := context.WithCancel(context.Background())
	defer stopRunner()
	go func() { _ = stepRunner.Run(rctx) }()
	select {
	case <-stepRunner.Started():
	case <-time.After(pnpTimeout):
		t.Fatal("the stepwise runner did not start")
	}
	if code, b := post("/v1/algorithms/stepwise/jobs", `{}`, map[string]string{"Idempotency-Key": "slow-job"}); code != 202 {
		t.Fatalf("submit slow-job: %d %s", code, b)
	}
	progressOf := func(scope string) string {
		return `(document.querySelector('` + scope + ` [data-role="progress"]') || {dataset: {}})`
	}
	row := `#jobs tr[data-job="slow-job"]`
	step(t, ctx, "a running job's row shows its progress bar",
		until(progressOf(row)+`.dataset.percent === "40"`),
		until(`document.querySelector('`+row+` [data-col="status"]').textContent === "running"`),
		until(`/40% resizing tiles/.test(document.querySelector('`+row+` .reason').textContent)`),
		until(`document.querySelector('`+row+` progress').value === 0.4`),
	)
	step(t, ctx, "the running job's page shows it too, and can cancel it",
		clickWhen(row+` a.job-link`),
		until(`document.getElementById("job-title").textContent === "Job slow-job"`),
		until(progressOf(`#job-page`)+`.dataset.percent === "40"`),
		until(`!document.getElementById("cancel-job").hidden`),
	)
	close(next)
	step(t, ctx, "new progress moves the bars without a reload",
		until(progressOf(row)+`.dataset.percent === "80"`),
		until(progressOf(`#job-page`)+`.dataset.percent === "80"`),
		until(`/80% writing tiles/.test(document.querySelector('#job-page [data-col="progress"]').textContent)`),
	)
	close(release)
	step(t, ctx, "the outcome replaces the bars",
		until(`document.querySelector('`+row+` [data-col="status"]').textContent === "succeeded"`),
		until(`!document.querySelector('`+row+` [data-role="progress"]')`),
		until(`document.querySelector('#job-page [data-col="status"]').textContent === "succeeded" && !document.querySelector('#job-page [data-role="progress"]')`),
		chromedp.Click(chromedp.CSS(`#job-page a[href="#"]`)),
		until(`document.getElementById("job-page").hidden`),
	)
	stopRunner()

	if c := extra.stop(t); c != 0 {
		t.Fatalf("runner exit %d: %s", c, extra.stderr.String())
	}
	step(t, ctx, "a stopped runner disappears without a reload",
		until(`!document.querySelector('#algorithms tr[data-algorithm="language_detection"]')`),
		until(`[...document.querySelectorAll("#events li")].some(li => /language_detection departed/.test(li.textContent))`),
	)
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	same, err := chromedp.Run(ectx, chromedp.Evaluate[bool](`window.pnpTestMark === 1`))
	if err != nil || !same {
		t.Fatalf("the page was reloaded: %v", err)
	}
	step(t, ctx, "the API reference renders the live algorithms with a try-it",
		chromedp.Navigate(base+"/docs"),
		until(`!!document.querySelector('#run_meme_classifier form.tryit') && !document.querySelector('#run_language_detection')`),
	)
}

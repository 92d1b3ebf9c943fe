package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/internal/metricstest"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/internal/python"
	"github.com/pnpworker/pnpworker/protocol"
)

// pnp runner --algorithms none --worker CMD serves the worker's algorithms
// only, one instance per --worker-procs process, the command split like a
// shell would; --metrics reports them, summed over the processes; it
// deregisters them on shutdown.
func TestRunnerServesWorkers(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	url := s.URL()
	metricsAddr, _ := freeLoopbackAddr(t)
	r := startPnp(t, "runner", "--server", url, "--algorithms", "none", "--worker-procs", "2", "--metrics", metricsAddr,
		"--worker", `/bin/sh -c 'exec "$0"' ../../examples/shell/shout.sh`)
	nc := s.Connect()
	natstest.Eventually(t, pnpTimeout, func() bool {
		m, err := nc.Request("run.shout", []byte(`{"text":"x"}`), time.Second)
		return err == nil && protocol.ReplyError(m) == nil
	}, "run.shout does not answer\nstderr:\n%s", &r.stderr)
	var keys []string
	natstest.Eventually(t, pnpTimeout, func() bool {
		keys = listKeys(t, url)
		return len(keys) == 2
	}, "want two shout instances\nstderr:\n%s", &r.stderr)
	for _, k := range keys {
		if !strings.HasPrefix(k, "shout.") {
			t.Fatalf("keys %v: want only shout instances (no built-in algorithm)", keys)
		}
	}
	m, err := nc.Request("run.shout", []byte(`{"text":"plug and play"}`), 10*time.Second)
	if err != nil || protocol.ReplyError(m) != nil || string(m.Data) != `{"text":"PLUG AND PLAY"}` {
		t.Fatalf("run.shout: %v %v %s", err, replyErr(m), dataOf(m))
	}
	// A reply is counted just after it is sent.
	var f metricstest.Families
	natstest.Eventually(t, pnpTimeout, func() bool {
		f = metricstest.Scrape(t, "http://"+metricsAddr+"/metrics")
		return f.Value(t, "pnp_runner_requests_total", "algorithm=shout", "code=200") >= 2
	}, "requests_total{shout,200} does not count the 2 answered")
	if got := f.Value(t, "pnp_runner_max_concurrency", "algorithm=shout"); got != 2 {
		t.Errorf("max_concurrency{shout} = %g, want 2 (two processes of 1)", got)
	}
	if got := f.Value(t, "pnp_worker_processes", "algorithm=shout"); got != 2 {
		t.Errorf("pnp_worker_processes{shout} = %g, want 2", got)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, r.stderr.String())
	}
	if left := listKeys(t, url); len(left) != 0 {
		t.Errorf("keys after stop: %v", left)
	}
}

func TestWorkerFlagErrors(t *testing.T) {
	isolateEnv(t)
	for name, args := range map[string][]string{
		"nothing to serve":     {"runner", "--algorithms", "none", "--server", "nats://127.0.0.1:1"},
		"unbalanced quote":     {"runner", "--algorithms", "none", "--worker", `python3 'x`, "--server", "nats://127.0.0.1:1"},
		"zero procs":           {"runner", "--worker", "x", "--worker-procs", "0", "--server", "nats://127.0.0.1:1"},
		"zero handshake":       {"runner", "--worker", "x", "--worker-handshake-timeout", "0s", "--server", "nats://127.0.0.1:1"},
		"negative grace":       {"runner", "--worker", "x", "--worker-cancel-grace", "-1s", "--server", "nats://127.0.0.1:1"},
		"zero max backoff":     {"runner", "--worker", "sh", "--worker-max-backoff", "0s", "--server", "nats://127.0.0.1:1"},
		"no such command":      {"runner", "--algorithms", "none", "--worker", "/nonexistent/worker --flag", "--server", "nats://127.0.0.1:1"},
		"negative concurrency": {"runner", "--worker", "sh", "--worker-concurrency", "-1", "--server", "nats://127.0.0.1:1"},
		"no worker dir":        {"runner", "--worker", "sh", "--worker-dir", "/nonexistent/dir", "--server", "nats://127.0.0.1:1"},
	} {
		t.Run(name, func(t *testing.T) {
			if code, _, stderr := runPnp(t, args...); code != 2 {
				t.Fatalf("exit %d, want 2 (usage)\nstderr:\n%s", code, stderr)
			}
		})
	}
}

func replyErr(m *nats.Msg) error {
	if m == nil {
		return nil
	}
	if e := protocol.ReplyError(m); e != nil {
		return e
	}
	return nil
}

func dataOf(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// A worker process's stderr is relayed into pnp's log: whatever it writes,
// no control character, escape sequence or bidirectional override reaches
// the terminal of whoever reads that log, and the text is still shown.
func TestWorkerStderrIsEscapedInTheLog(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	url := s.URL()
	// printf's octal escapes: OSC 0 title, clear screen, 8-bit CSI, DEL,
	// a right-to-left override, then the worker itself.
	script := `printf 'STDERR-MARK\033]0;owned\007\033[2J\302\233\177\342\200\256evil\n' >&2; exec "$0"`
	r := startPnp(t, "runner", "--server", url, "--algorithms", "none", "--worker",
		`/bin/sh -c '`+strings.ReplaceAll(script, `'`, `'\''`)+`' ../../examples/shell/shout.sh`)
	natstest.Eventually(t, pnpTimeout, func() bool { return strings.Contains(r.stderr.String(), "STDERR-MARK") },
		"the worker's stderr does not reach the log\nstderr:\n%s", &r.stderr)
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, r.stderr.String())
	}
	out := r.stderr.String()
	if c := terminalActive(out); c != -1 {
		t.Errorf("the log holds %U, which a terminal acts on:\n%q", c, out)
	}
	if !strings.Contains(out, "evil") || !strings.Contains(out, "owned") {
		t.Errorf("the worker's line is not shown:\n%s", out)
	}
}

// --worker-handshake-timeout bounds the wait for a worker's hello: a
// process that never says it is killed when the timeout passes, and
// restarted.
func TestWorkerHandshakeTimeoutFlag(t *testing.T) {
	isolateEnv(t)
	url, _, _ := serveLanguageDetection(t)
	r := startPnp(t, "runner", "--server", url, "--algorithms", "none", "--worker", "sleep 60", "--worker-handshake-timeout", "300ms")
	r.waitStderr(t, "no hello within 300ms")
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, r.stderr.String())
	}
}

// pnp up with a worker that crashes at every start keeps everything else
// it hosts: the worker is restarted at the --worker-max-backoff pace for
// as long as pnp up runs and its algorithm is never registered, while the
// NATS server, the built-in runner and the controller go on serving (a
// request and a job both succeed), and pnp up stops cleanly. Before, the
// runner gave up after 21 consecutive failures (about 140 s at the default
// backoff) and pnp up stopped, its NATS server included.
func TestUpSurvivesAWorkerThatKeepsCrashing(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--algorithms", "language_detection",
		"--worker", `/bin/sh -c 'echo crashing >&2; exit 3'`, "--worker-max-backoff", "5ms")
	up.waitOutput(t, "Ctrl-C stops it.")
	// More restarts than the 21 failures after which it used to give up.
	const restarts = 30
	natstest.Eventually(t, pnpTimeout, func() bool {
		select {
		case code := <-up.done:
			up.done <- code
			t.Fatalf("pnp up exited %d while a worker was failing\nstderr:\n%s", code, up.stderr.String())
		default:
		}
		return strings.Count(up.stderr.String(), "worker process stopped; restarting") >= restarts
	}, "fewer than %d restarts logged\nstderr:\n%s", restarts, &up.stderr)
	if lang := requestLanguage(t, url, "Le renard brun saute par-dessus le chien paresseux"); lang != "fra" {
		t.Errorf("language = %q, want fra", lang)
	}
	if code, out, stderr := runPnp(t, "submit", "--server", url, "--wait", "language_detection", `{"text":"Die Mannschaften schreiben Algorithmen"}`); code != 0 || !strings.Contains(out, "deu") {
		t.Errorf("a job beside the failing worker: exit %d\n%s\n%s", code, out, stderr)
	}
	for _, k := range listKeys(t, url) {
		if !strings.HasPrefix(k, "language_detection.") {
			t.Errorf("key %s registered: want only language_detection", k)
		}
	}
	if code := up.stop(t); code != 0 {
		t.Errorf("pnp up: exit %d after cancellation, want 0\nstderr:\n%s", code, up.stderr.String())
	}
}

// --worker-dir is the worker's working directory (an adapter's relative
// model paths resolve there) and --worker-concurrency the requests each
// process of a plain function serves at once.
func TestRunnerWorkerDirAndConcurrency(t *testing.T) {
	isolateEnv(t)
	py := python.Find(t)
	sdk, err := filepath.Abs("../../sdk/python/pnpworker.py")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "greeting.txt"), "hello")
	writeTestFile(t, filepath.Join(dir, "adapter.py"), `
def run_greet(name: str) -> str:
    with open("greeting.txt") as f:
        return f.read() + " " + name
`)
	s := natstest.Start(t)
	metricsAddr, _ := freeLoopbackAddr(t)
	r := startPnp(t, "runner", "--server", s.URL(), "--algorithms", "none", "--metrics", metricsAddr,
		"--worker-dir", dir, "--worker-concurrency", "3", "--worker", py+" "+sdk+" adapter.py")
	nc := s.Connect()
	var m *nats.Msg
	natstest.Eventually(t, pnpTimeout, func() bool {
		m, err = nc.Request("run.greet", []byte(`{"name":"ada"}`), time.Second)
		return err == nil && protocol.ReplyError(m) == nil
	}, "run.greet does not answer\nstderr:\n%s", &r.stderr)
	if string(m.Data) != `"hello ada"` {
		t.Fatalf("run.greet = %s, want \"hello ada\"", m.Data)
	}
	f := metricstest.Scrape(t, "http://"+metricsAddr+"/metrics")
	if got := f.Value(t, "pnp_runner_max_concurrency", "algorithm=greet"); got != 3 {
		t.Errorf("max_concurrency{greet} = %g, want 3 (--worker-concurrency 3)", got)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, r.stderr.String())
	}
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The banner of pnp up lists what its workers serve once they said hello,
// names a worker that has not, and shows commands only for algorithms
// that are served.
func TestUpBannerListsWorkers(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	up := startPnp(t, "up", "--listen", addr, "--data", t.TempDir(), "--log-level", "warn", "--algorithms", "none",
		"--worker-handshake-timeout", "3s",
		"--worker", `/bin/sh -c 'exec "$0"' ../../examples/shell/shout.sh`,
		"--worker", `/bin/sh -c 'sleep 30'`)
	up.waitOutput(t, "Ctrl-C stops it.")
	out := up.stdout.String()
	for _, want := range []string{
		"serving   shout 1.0.0\n",
		"starting  worker /bin/sh -c 'sleep 30' (no hello yet",
		"kv ls discovery", "micro ls",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	// Nothing serves the built-ins: no command names them.
	for _, alg := range []string{"language_detection", "meme_classifier", "image_info", "image_thumbnail"} {
		if strings.Contains(out, alg) {
			t.Errorf("banner names %s, which nothing serves:\n%s", alg, out)
		}
	}
	if code := up.stop(t); code != 0 {
		t.Errorf("exit %d after cancellation\nstderr:\n%s", code, up.stderr.String())
	}
}

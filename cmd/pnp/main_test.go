package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/embedded"
	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// pnpTimeout bounds every run() in these tests: far above what a command
// takes, so only a hang trips it.
const pnpTimeout = 60 * time.Second

// lockedBuffer is an io.Writer that a running command writes to while the
// test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// isolateEnv clears the variables pnp reads as flag defaults, so the
// environment of whoever runs the tests cannot change them — all but
// PNP_HTTP, which stays on a free loopback port as TestMain set it: a
// pnp up on the default 8080 would collide with parallel runs.
func isolateEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "NATS_") || strings.HasPrefix(name, "PNP_") || name == "XDG_STATE_HOME" {
			t.Setenv(name, "")
		}
	}
	t.Setenv("PNP_HTTP", "127.0.0.1:0")
}

// runPnp runs the command line args to completion and returns its exit code,
// stdout and stderr.
func runPnp(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pnpTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("pnp %s: still running after %s", strings.Join(args, " "), pnpTimeout)
	}
	return code, out.String(), errOut.String()
}

// background is a long-running command started by startPnp.
type background struct {
	args   []string
	cancel context.CancelFunc
	done   chan int
	stdout lockedBuffer
	stderr lockedBuffer
}

// startPnp runs args in a goroutine until stop is called (or the test ends).
func startPnp(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{args: args, cancel: cancel, done: make(chan int, 1)}
	go func() { b.done <- run(ctx, args, &b.stdout, &b.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(pnpTimeout):
			t.Errorf("pnp %s: did not stop within %s", strings.Join(args, " "), pnpTimeout)
		}
	})
	return b
}

// stop cancels the command and returns its exit code.
func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code // for the cleanup
		return code
	case <-time.After(pnpTimeout):
		t.Fatalf("pnp %s: did not stop within %s of cancellation\nstderr:\n%s", strings.Join(b.args, " "), pnpTimeout, b.stderr.String())
		return -1
	}
}

// waitOutput polls until stdout contains want, failing early if the
// command exits.
func (b *background) waitOutput(t *testing.T, want string) {
	t.Helper()
	b.wait(t, "stdout", &b.stdout, want)
}

// waitStderr polls until stderr (the log) contains want, failing early if
// the command exits.
func (b *background) waitStderr(t *testing.T, want string) {
	t.Helper()
	b.wait(t, "stderr", &b.stderr, want)
}

func (b *background) wait(t *testing.T, name string, buf *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(pnpTimeout)
	for !strings.Contains(buf.String(), want) {
		select {
		case code := <-b.done:
			b.done <- code
			t.Fatalf("pnp %s exited %d before printing %q on %s\nstdout:\n%s\nstderr:\n%s",
				strings.Join(b.args, " "), code, want, name, b.stdout.String(), b.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pnp %s: no %q on %s after %s\nstdout:\n%s\nstderr:\n%s",
				strings.Join(b.args, " "), want, name, pnpTimeout, b.stdout.String(), b.stderr.String())
		}
	}
}

// serveLanguageDetection runs a runner for language_detection on a fresh
// embedded NATS. It returns the server URL and the registration key.
func serveLanguageDetection(t *testing.T) (url, key string, stop func()) {
	t.Helper()
	s := natstest.Start(t)
	r, err := runner.New(s.Connect(), []*runner.Algorithm{runner.Must(languagedetection.New())})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("runner: %v", err)
				}
			case <-time.After(pnpTimeout):
				t.Errorf("runner did not stop within %s", pnpTimeout)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-r.Started():
	case err := <-errc:
		t.Fatalf("runner stopped before starting: %v", err)
	case <-time.After(pnpTimeout):
		t.Fatalf("runner did not start within %s", pnpTimeout)
	}
	return s.URL(), r.Instances()[0], stop
}

// freeLoopbackAddr returns 127.0.0.1:<a port nobody listens on right now>.
func freeLoopbackAddr(t *testing.T) (addr string, port int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String(), l.Addr().(*net.TCPAddr).Port
}

// requestLanguage asks run.language_detection over a fresh connection to url
// and returns the detected language.
func requestLanguage(t *testing.T, url, text string) string {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer nc.Close()
	body, _ := json.Marshal(languagedetection.Input{Text: text})
	msg, err := nc.Request("run.language_detection", body, 10*time.Second)
	if err != nil {
		t.Fatalf("request run.language_detection: %v", err)
	}
	if e := protocol.ReplyError(msg); e != nil {
		t.Fatalf("request run.language_detection: error reply %v", e)
	}
	var out languagedetection.Output
	if err := json.Unmarshal(msg.Data, &out); err != nil {
		t.Fatalf("reply %s: %v", msg.Data, err)
	}
	return out.Language
}

// listKeys runs `pnp discovery ls --json` against url and returns the keys.
func listKeys(t *testing.T, url string) []string {
	t.Helper()
	code, stdout, stderr := runPnp(t, "discovery", "ls", "--json", "--server", url)
	if code != 0 {
		t.Fatalf("pnp discovery ls --json: exit %d\n%s", code, stderr)
	}
	var recs []discovery.Registration
	if err := json.Unmarshal([]byte(stdout), &recs); err != nil {
		t.Fatalf("pnp discovery ls --json: %v\n%s", err, stdout)
	}
	keys := []string{}
	for _, r := range recs {
		keys = append(keys, r.Key())
	}
	return keys
}

// checkOneLineError checks that stderr is one line matching want, optionally
// followed by the "run 'pnp ... --help'" hint, and holds no stack trace.
func checkOneLineError(t *testing.T, stderr string, want *regexp.Regexp) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if !want.MatchString(lines[0]) {
		t.Errorf("stderr first line %q does not match %s", lines[0], want)
	}
	hint := regexp.MustCompile(`^run 'pnp( [a-z]+)* --help' for`)
	if len(lines) > 2 || len(lines) == 2 && !hint.MatchString(lines[1]) {
		t.Errorf("stderr has more than one error line (and the --help hint):\n%s", stderr)
	}
	if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
		t.Errorf("stderr holds a stack trace:\n%s", stderr)
	}
}

func TestTopLevelUsage(t *testing.T) {
	isolateEnv(t)
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
	}{
		{"no arguments", nil, 2},
		{"--help", []string{"--help"}, 0},
		{"-h", []string{"-h"}, 0},
		{"help", []string{"help"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runPnp(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d", code, tc.wantCode)
			}
			if !strings.HasPrefix(stdout, "pnp — ") || stderr != "" {
				t.Errorf("want usage on stdout and nothing on stderr; stdout:\n%s\nstderr:\n%s", stdout, stderr)
			}
			for _, c := range commands() {
				if !regexp.MustCompile(`(?m)^  ` + c.name + ` +\S`).MatchString(stdout) {
					t.Errorf("usage does not list %s:\n%s", c.name, stdout)
				}
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	isolateEnv(t)
	code, stdout, stderr := runPnp(t, "frobnicate", "--server", "nats://127.0.0.1:1")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if stdout != "" {
		t.Errorf("stdout = %q, want nothing", stdout)
	}
	checkOneLineError(t, stderr, regexp.MustCompile(`^pnp: unknown command "frobnicate"`))
}

func TestUsageErrors(t *testing.T) {
	isolateEnv(t)
	// All of these fail before connecting anywhere: the server is
	// unreachable on purpose, so a command that tried would exit 1.
	const nowhere = "nats://127.0.0.1:1"
	for _, tc := range []struct {
		name string
		args []string
		want string // on the first line of stderr
	}{
		{"up unknown flag", []string{"up", "--bogus"}, "flag provided but not defined: -bogus"},
		{"up bad listen address", []string{"up", "--listen", "4222", "--data", "unused"}, `--listen "4222": want host:port`},
		{"up bad port", []string{"up", "--listen", "127.0.0.1:http", "--data", "unused"}, "bad port"},
		{"up unknown algorithm", []string{"up", "--algorithms", "nope", "--data", "unused"}, `unknown algorithm "nope"`},
		{"up bad monitor address", []string{"up", "--nats-monitor", "8222", "--data", "unused"}, `--nats-monitor "8222": want host:port`},
		{"up bad monitor port", []string{"up", "--nats-monitor", "127.0.0.1:99999", "--data", "unused"}, `--nats-monitor "127.0.0.1:99999": bad port`},
		{"controller bad keep consumers", []string{"controller", "--keep-consumers", "ok,no.dots", "--server", nowhere}, `keep consumers: "no.dots" is not a valid algorithm name`},
		{"runner unknown flag", []string{"runner", "--bogus", "--server", nowhere}, "flag provided but not defined"},
		{"runner unknown algorithm", []string{"runner", "--algorithms", "language_detection,nope", "--server", nowhere}, `unknown algorithm "nope"`},
		{"runner bad log level", []string{"runner", "--log-level", "loud", "--server", nowhere}, `invalid log level "loud"`},
		{"runner bad duration", []string{"runner", "--drain-timeout", "soon", "--server", nowhere}, "invalid value"},
		{"runner bad metrics address", []string{"runner", "--metrics", "127.0.0.1:http-alt-x", "--server", nowhere}, `--metrics "127.0.0.1:http-alt-x"`},
		{"controller bad metrics address", []string{"controller", "--metrics", "nohost:99999", "--server", nowhere}, `--metrics "nohost:99999"`},
		{"runner bad JetStream prefix", []string{"runner", "--js-api-prefix", "$JS.APP.>", "--server", nowhere}, `--js-api-prefix (NATS_JS_API_PREFIX): JetStream API prefix "$JS.APP.>" is not a subject prefix`},
		{"register bad JetStream prefix", []string{"register", "--js-api-prefix", "$JS.APP.API.", "--record", "unused.json", "--server", nowhere}, `--js-api-prefix (NATS_JS_API_PREFIX): JetStream API prefix "$JS.APP.API." is not a subject prefix`},
		{"runner JetStream prefix and domain", []string{"runner", "--js-api-prefix", "$JS.APP.API", "--js-domain", "hub", "--server", nowhere}, `--js-api-prefix (NATS_JS_API_PREFIX) and --js-domain (NATS_JS_DOMAIN) exclude each other`},
		{"register JetStream prefix and domain", []string{"register", "--js-api-prefix", "$JS.APP.API", "--js-domain", "hub", "--record", "unused.json", "--server", nowhere}, `--js-api-prefix (NATS_JS_API_PREFIX) and --js-domain (NATS_JS_DOMAIN) exclude each other`},
		{"runner positional argument", []string{"runner", "language_detection", "--server", nowhere}, `unexpected argument "language_detection"`},
		{"algorithms unknown flag", []string{"algorithms", "--bogus"}, "flag provided but not defined"},
		{"algorithms positional argument", []string{"algorithms", "--server", nowhere, "extra", "--json"}, `unexpected argument "extra"`},
		{"discovery without subcommand", []string{"discovery"}, "missing subcommand"},
		{"discovery flag before subcommand", []string{"discovery", "--server", nowhere, "ls"}, "want a subcommand"},
		{"discovery unknown subcommand", []string{"discovery", "rm"}, `unknown subcommand "rm"`},
		{"discovery ls unknown flag", []string{"discovery", "ls", "--bogus"}, "flag provided but not defined"},
		{"discovery provision bad ttl", []string{"discovery", "provision", "--ttl", "forever", "--server", nowhere}, "invalid value"},
		{"discovery watch has no --json", []string{"discovery", "watch", "--json", "--server", nowhere}, "flag provided but not defined: -json"},
		{"version unknown flag", []string{"version", "--bogus"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runPnp(t, tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			checkOneLineError(t, stderr, regexp.MustCompile(`^pnp `+tc.args[0]+`: .*`+regexp.QuoteMeta(tc.want)))
		})
	}
}

func TestHelp(t *testing.T) {
	isolateEnv(t)
	cases := [][]string{{"discovery", "provision"}, {"discovery", "ls"}, {"discovery", "watch"}}
	for _, c := range commands() {
		cases = append(cases, []string{c.name})
	}
	for _, cmd := range cases {
		for _, flag := range []string{"--help", "-h"} {
			args := append(slices.Clone(cmd), flag)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, stdout, stderr := runPnp(t, args...)
				if code != 0 {
					t.Errorf("exit %d, want 0; stderr:\n%s", code, stderr)
				}
				if want := "usage: pnp " + strings.Join(cmd, " "); !strings.HasPrefix(stdout, want) {
					t.Errorf("stdout does not start with %q:\n%s", want, stdout)
				}
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
			})
		}
	}
}

func TestVersion(t *testing.T) {
	isolateEnv(t)
	code, stdout, stderr := runPnp(t, "version")
	if code != 0 || stdout != "pnp "+version+"\n" || stderr != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", code, stdout, stderr, "pnp "+version+"\n")
	}
}

func TestUnreachableServer(t *testing.T) {
	isolateEnv(t)
	for _, args := range [][]string{
		{"algorithms"},
		{"algorithms", "--json"},
		{"discovery", "ls"},
		{"discovery", "watch"},
		{"discovery", "provision"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runPnp(t, append(args, "--server", "nats://127.0.0.1:1")...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			if n := strings.Count(stderr, "\n"); n != 1 {
				t.Errorf("stderr has %d lines, want one:\n%s", n, stderr)
			}
			checkOneLineError(t, stderr, regexp.MustCompile(`^pnp `+args[0]+`: cannot connect to NATS at nats://127\.0\.0\.1:1: `))
		})
	}
}

func TestNoDiscoveryBucket(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	for _, args := range [][]string{{"algorithms"}, {"discovery", "ls"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := runPnp(t, append(args, "--server", s.URL())...)
			if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, one line", code, stdout, stderr)
			}
			checkOneLineError(t, stderr, regexp.MustCompile(`no discovery bucket on `+regexp.QuoteMeta(s.URL())+` yet`))
		})
	}
	// provision creates it; then ls answers, with nobody registered.
	if code, stdout, stderr := runPnp(t, "discovery", "provision", "--server", s.URL()); code != 0 || !strings.HasPrefix(stdout, "bucket discovery ready") {
		t.Fatalf("pnp discovery provision: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if keys := listKeys(t, s.URL()); len(keys) != 0 {
		t.Errorf("keys after provisioning = %v, want none", keys)
	}
	code, stdout, stderr := runPnp(t, "algorithms", "--server", s.URL())
	if code != 0 || stdout != "" || !strings.Contains(stderr, "no algorithm is registered") {
		t.Errorf("pnp algorithms on an empty bucket: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func TestListsRunningRunner(t *testing.T) {
	isolateEnv(t)
	url, key, _ := serveLanguageDetection(t)

	t.Run("discovery ls", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "discovery", "ls", "--server", url)
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "KEY ") {
			t.Fatalf("want a header and one row:\n%s", stdout)
		}
		if f := strings.Fields(lines[1]); f[0] != key || f[1] != "1.0.0" || f[2] != runner.DefaultQueueGroup {
			t.Errorf("row %q, want key %s, version 1.0.0, queue %s", lines[1], key, runner.DefaultQueueGroup)
		}
	})

	t.Run("discovery ls --json", func(t *testing.T) {
		if keys := listKeys(t, url); !slices.Equal(keys, []string{key}) {
			t.Errorf("keys = %v, want [%s]", keys, key)
		}
	})

	t.Run("algorithms", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "algorithms", "--server", url)
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "ALGORITHM ") {
			t.Fatalf("want a header and one row:\n%s", stdout)
		}
		want := []string{"language_detection", "1.0.0", "1", "run.language_detection", "5s"}
		if f := strings.Fields(lines[1]); len(f) < len(want) || !slices.Equal(f[:len(want)], want) {
			t.Errorf("row %q, want it to start with %v", lines[1], want)
		}
	})

	t.Run("algorithms --json", func(t *testing.T) {
		code, stdout, stderr := runPnp(t, "algorithms", "--json", "--server", url)
		if code != 0 || stderr != "" {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		var algs []algorithmSummary
		if err := json.Unmarshal([]byte(stdout), &algs); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		if len(algs) != 1 {
			t.Fatalf("want one algorithm:\n%s", stdout)
		}
		a := algs[0]
		if a.Algorithm != "language_detection" || a.Subject != "run.language_detection" || !slices.Equal(a.Versions, []string{"1.0.0"}) ||
			len(a.Instances) != 1 || a.Instances[0].Key() != key || len(a.InputSchema) == 0 || len(a.OutputSchema) == 0 {
			t.Errorf("summary does not describe %s with its schemas:\n%s", key, stdout)
		}
	})
}

func TestDiscoveryWatch(t *testing.T) {
	isolateEnv(t)
	url, key, stopRunner := serveLanguageDetection(t)
	w := startPnp(t, "discovery", "watch", "--server", url)
	w.waitOutput(t, "# current registrations listed")
	if !regexp.MustCompile(`(?m) JOIN +` + regexp.QuoteMeta(key) + ` version=1\.0\.0 `).MatchString(w.stdout.String()) {
		t.Errorf("watch does not show the registration of %s:\n%s", key, w.stdout.String())
	}
	// Heartbeats are not shown by default; --heartbeats shows them.
	hb := startPnp(t, "discovery", "watch", "--server", url, "--heartbeats")
	hb.waitOutput(t, "HEARTBEAT "+key)
	if strings.Count(w.stdout.String(), key) != 1 {
		t.Errorf("watch without --heartbeats shows more than the join of %s:\n%s", key, w.stdout.String())
	}
	stopRunner()
	w.waitOutput(t, "LEAVE     "+key+" (deregistered)")
	if code := w.stop(t); code != 0 {
		t.Errorf("pnp discovery watch: exit %d after cancellation, want 0\nstderr:\n%s", code, w.stderr.String())
	}
}

func TestRunnerWaitsForNATS(t *testing.T) {
	isolateEnv(t)
	addr, port := freeLoopbackAddr(t)
	url := "nats://" + addr
	// The runner starts first: start order must not matter.
	r := startPnp(t, "runner", "--server", url, "--algorithms", "language_detection", "--drain-timeout", "5s")
	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	var keys []string
	natstest.Eventually(t, pnpTimeout, func() bool {
		code, stdout, _ := runPnp(t, "discovery", "ls", "--json", "--server", url)
		keys = nil
		var recs []discovery.Registration
		if code == 0 && json.Unmarshal([]byte(stdout), &recs) == nil {
			for _, rec := range recs {
				keys = append(keys, rec.Key())
			}
		}
		return len(keys) == 1
	}, "pnp runner did not register once NATS came up\nstderr:\n%s", &r.stderr)
	if lang := requestLanguage(t, url, "Heute ist ein schöner Tag, und wir gehen zusammen in den Wald, um die Vögel zu beobachten."); lang != "deu" {
		t.Errorf("language = %q, want deu", lang)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("pnp runner: exit %d after cancellation, want 0\nstderr:\n%s", code, r.stderr.String())
	}
	if left := listKeys(t, url); len(left) != 0 {
		t.Errorf("keys after the runner stopped = %v, want none (%s deregistered)", left, keys[0])
	}
}

// TestRunnerStopsWhileNATSIsAway: stopped while its server is
// unreachable, pnp runner has nothing to flush and nowhere to deregister
// (its record expires by itself); it stops with exit 0 and says so,
// rather than failing on the drain of a connection that is not there.
func TestRunnerStopsWhileNATSIsAway(t *testing.T) {
	isolateEnv(t)
	s := natstest.Start(t)
	proxy := startProxy(t, strings.TrimPrefix(s.URL(), "nats://"))
	r := startPnp(t, "runner", "--server", "nats://"+proxy.addr(), "--algorithms", "language_detection", "--drain-timeout", "2s")
	r.waitStderr(t, `"serving"`)
	proxy.Cut()
	r.waitStderr(t, "disconnected from NATS")
	if code := r.stop(t); code != 0 {
		t.Errorf("pnp runner: exit %d when stopped while NATS is away, want 0\nstderr:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), "NATS is unreachable") {
		t.Errorf("the log does not say why nothing was drained:\n%s", r.stderr.String())
	}
}

func TestUp(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	url := "nats://" + addr
	data := t.TempDir()

	// upOnce runs pnp up until it serves, checks it, stops it and returns
	// the registration keys there were: one per built-in algorithm.
	builtin := []string{"image_info.", "image_thumbnail.", "language_detection.", "meme_classifier."}
	upOnce := func() []string {
		t.Helper()
		up := startPnp(t, "up", "--listen", addr, "--data", data)
		up.waitOutput(t, "Ctrl-C stops it.")
		out := up.stdout.String()
		for _, want := range []string{"pnp is up", url, data, "language_detection 1.0.0", "nats -s " + url + " kv ls discovery"} {
			if !strings.Contains(out, want) {
				t.Errorf("banner lacks %q:\n%s", want, out)
			}
		}
		if lang := requestLanguage(t, url, "Le renard brun saute par-dessus le chien paresseux"); lang != "fra" {
			t.Errorf("language = %q, want fra", lang)
		}
		keys := listKeys(t, url)
		if len(keys) != len(builtin) {
			t.Fatalf("keys = %v, want one instance of each of %v", keys, builtin)
		}
		for i, prefix := range builtin {
			if !strings.HasPrefix(keys[i], prefix) {
				t.Fatalf("keys = %v, want one instance of each of %v", keys, builtin)
			}
		}
		if code := up.stop(t); code != 0 {
			t.Fatalf("pnp up: exit %d after cancellation, want 0\nstderr:\n%s", code, up.stderr.String())
		}
		if code, _, _ := runPnp(t, "algorithms", "--server", url); code != 1 {
			t.Errorf("pnp algorithms after pnp up stopped: exit %d, want 1 (nothing listening)", code)
		}
		return keys
	}

	first := upOnce()
	// Restarted on the same data directory, the bucket holds only the new
	// instances: the first deregistered on its way out instead of lingering
	// until their records expired.
	second := upOnce()
	for i := range first {
		if second[i] == first[i] {
			t.Errorf("the restarted pnp up reuses the key %s", first[i])
		}
	}
}

// TestUpLocksDataDirectory starts pnp up and then a second one on the same
// data directory (another port): the second exits at once, before opening
// the store, naming the directory and the pid that holds it; the first
// keeps serving.
func TestUpLocksDataDirectory(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	data := t.TempDir()
	up := startPnp(t, "up", "--listen", addr, "--data", data, "--algorithms", "language_detection")
	up.waitOutput(t, "Ctrl-C stops it.")

	addr2, _ := freeLoopbackAddr(t)
	code, _, stderr := runPnp(t, "up", "--listen", addr2, "--data", data, "--algorithms", "language_detection")
	if code != 1 {
		t.Fatalf("second pnp up: exit %d, want 1\nstderr:\n%s", code, stderr)
	}
	want := fmt.Sprintf("pnp up: data directory %s is in use by pid %d", data, os.Getpid())
	if strings.TrimSpace(stderr) != want {
		t.Fatalf("second pnp up said %q, want %q", stderr, want)
	}
	if lang := requestLanguage(t, "nats://"+addr, "Le renard brun saute par-dessus le chien paresseux"); lang != "fra" {
		t.Errorf("first pnp up after the second tried: language = %q, want fra", lang)
	}
	if code := up.stop(t); code != 0 {
		t.Fatalf("pnp up: exit %d, want 0\nstderr:\n%s", code, up.stderr.String())
	}
	// Released on the way out: the directory can be used again (on a
	// fresh port: addr2 was free seconds ago, and other tests bind too).
	addr3, _ := freeLoopbackAddr(t)
	again := startPnp(t, "up", "--listen", addr3, "--data", data, "--algorithms", "language_detection")
	again.waitOutput(t, "Ctrl-C stops it.")
	if code := again.stop(t); code != 0 {
		t.Fatalf("pnp up on the released directory: exit %d\nstderr:\n%s", code, again.stderr.String())
	}
}

// TestUpRefusesNestedDataDirectories starts pnp up on a data directory and
// then a second one inside its store (--data D/jetstream, where NATS would
// move the running store into its own), through a symlink to that, and
// above another's (--data of the parent of a running one): each is refused
// with one line naming both directories and the pid; the first keeps
// serving, and after a restart its results are still there.
func TestUpRefusesNestedDataDirectories(t *testing.T) {
	isolateEnv(t)
	addr, _ := freeLoopbackAddr(t)
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "first")
	up := startPnp(t, "up", "--listen", addr, "--data", data, "--algorithms", "language_detection")
	up.waitOutput(t, "Ctrl-C stops it.")
	url := "nats://" + addr
	submit := func(id string) {
		t.Helper()
		code, stdout, stderr := runPnp(t, "submit", "--server", url, "--id", id, "--wait", "language_detection",
			`{"text":"Le renard brun saute par-dessus le chien paresseux"}`)
		if code != 0 || decodeResult(t, stdout).Status != jobs.StatusSucceeded {
			t.Fatalf("submit %s: exit %d\n%s%s", id, code, stdout, stderr)
		}
	}
	submit("before-nested")

	link := filepath.Join(root, "link")
	if err := os.Symlink(filepath.Join(data, "jetstream"), link); err != nil {
		t.Fatal(err)
	}
	inside := fmt.Sprintf("is inside data directory %s, in use by pid %d: one JetStream store may not hold another", data, os.Getpid())
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"its store", filepath.Join(data, "jetstream"), "pnp up: data directory " + filepath.Join(data, "jetstream") + " " + inside},
		{"a symlink to its store", link, "pnp up: data directory " + filepath.Join(data, "jetstream") + " " + inside},
		{"inside its store", filepath.Join(data, "jetstream", "x"), "pnp up: data directory " + filepath.Join(data, "jetstream", "x") + " " + inside},
		{"above it", root, fmt.Sprintf("pnp up: data directory %s contains data directory %s, in use by pid %d: one JetStream store may not hold another", root, data, os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr2, _ := freeLoopbackAddr(t)
			code, _, stderr := runPnp(t, "up", "--listen", addr2, "--data", tc.dir, "--algorithms", "language_detection")
			if code != 1 || strings.TrimSpace(stderr) != tc.want {
				t.Fatalf("second pnp up: exit %d, said %q; want exit 1 and %q", code, stderr, tc.want)
			}
		})
	}
	submit("after-nested")
	if code := up.stop(t); code != 0 {
		t.Fatalf("pnp up: exit %d, want 0\nstderr:\n%s", code, up.stderr.String())
	}
	// Restarted, the first pnp up still has both results: its store was
	// never moved.
	addr3, _ := freeLoopbackAddr(t)
	again := startPnp(t, "up", "--listen", addr3, "--data", data, "--algorithms", "language_detection")
	again.waitOutput(t, "Ctrl-C stops it.")
	for _, id := range []string{"before-nested", "after-nested"} {
		code, stdout, stderr := runPnp(t, "result", "--server", "nats://"+addr3, id)
		if code != 0 || decodeResult(t, stdout).JobID != id {
			t.Errorf("result %s after the restart: exit %d\n%s%s", id, code, stdout, stderr)
		}
	}
	if code := again.stop(t); code != 0 {
		t.Fatalf("pnp up restarted: exit %d\nstderr:\n%s", code, again.stderr.String())
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/shlex"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/worker"
)

// workerFlags are --worker (repeatable), --worker-procs, --worker-idle and
// the bounds of a worker process's life.
type workerFlags struct {
	commands         stringList
	procs            procRange
	idle             time.Duration
	dir              string
	concurrency      int
	env              stringList
	handshake, grace time.Duration
	maxBackoff       time.Duration
}

// procRange is --worker-procs: N processes, or MIN:MAX following the load.
type procRange struct{ min, max int }

func (p *procRange) String() string {
	if p.max > p.min {
		return fmt.Sprintf("%d:%d", p.min, p.max)
	}
	return strconv.Itoa(p.min)
}

// Set parses N or MIN:MAX. The minimum is at least 1: an algorithm is
// known, registered and reachable only through a running process's hello,
// so with no process its requests would find no responder.
func (p *procRange) Set(v string) error {
	lo, hi, scaled := strings.Cut(strings.TrimSpace(v), ":")
	n, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil {
		return fmt.Errorf("want N or MIN:MAX, whole numbers (e.g. 2 or 1:4): %q is not a number", lo)
	}
	m := n
	if scaled {
		if m, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil {
			return fmt.Errorf("want N or MIN:MAX, whole numbers (e.g. 2 or 1:4): %q is not a number", hi)
		}
	}
	switch {
	case n < 1:
		return fmt.Errorf("the minimum %d must be at least 1: a worker's algorithms are known and registered only while one of its processes runs", n)
	case m < n:
		return fmt.Errorf("the minimum %d exceeds the maximum %d", n, m)
	}
	p.min, p.max = n, m
	return nil
}

// workerDeps are what the worker flags' Workers use besides NATS: the
// JetStream through which the scaler reads the JOBS backlog, and the
// metrics of the process (nil: none).
type workerDeps struct {
	js      jetstream.JetStream
	metrics *worker.Metrics
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, "; ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (f *workerFlags) register(fs *flagSet) {
	fs.Var(&f.commands, "worker", "command of a worker process serving algorithms over stdin/stdout (docs/WORKER.md), split like a shell would; repeatable. E.g. '/usr/bin/python3 sdk/python/pnpworker.py examples/python/runner_adapter.py' (name the interpreter that has the adapter's packages: a pyenv python3 first on PATH may not see apt's)")
	f.procs = procRange{min: 1, max: 1}
	fs.Var(&f.procs, "worker-procs", "processes of each --worker command, each its own instance: `N|MIN:MAX`; N fixed, or MIN:MAX following the load: a process is added while requests or jobs wait with every process busy, and one is drained and stopped after --worker-idle of slack (MIN at least 1; docs/WORKER.md, \"Scaling\")")
	fs.DurationVar(&f.idle, "worker-idle", worker.DefaultScaleIdle, "with --worker-procs MIN:MAX, how long some process must have had nothing to do, at every look and with nothing waiting, before one above MIN is drained and stopped")
	fs.StringVar(&f.dir, "worker-dir", "", "working directory of the worker processes, where an adapter's relative paths (model files) are resolved; relative paths in --worker are resolved there too. Default: pnp's own")
	fs.Var(&f.env, "worker-env", "KEY=VALUE added to the worker processes' environment (a model's path, the VERSION an adapter reads); repeatable")
	fs.IntVar(&f.concurrency, "worker-concurrency", 0, "requests each worker process serves at once for functions whose author did not say (sets PNP_WORKER_CONCURRENCY; the Python SDK's default is 1: say more only for thread-safe functions)")
	fs.DurationVar(&f.handshake, "worker-handshake-timeout", worker.DefaultHandshakeTimeout, "how long a worker process may take to say hello, loading its models included, before it is killed and restarted")
	fs.DurationVar(&f.grace, "worker-cancel-grace", worker.DefaultCancelGrace, "how long a worker process may take to answer a cancelled request (deadline passed) before it is killed and restarted")
	fs.DurationVar(&f.maxBackoff, "worker-max-backoff", worker.DefaultMaxBackoff, "the longest wait before restarting a worker process that keeps failing; it is restarted at that pace until pnp stops, never given up on")
}

// build splits the commands and makes one worker.Worker per command.
func (f *workerFlags) build(nc *nats.Conn, deps workerDeps, log zerolog.Logger, opts ...runner.Option) ([]*worker.Worker, error) {
	if err := f.check(); err != nil {
		return nil, err
	}
	var backlog func(context.Context, string) (int, error)
	if f.procs.max > f.procs.min && deps.js != nil {
		backlog = func(ctx context.Context, algorithm string) (int, error) { return jobs.Waiting(ctx, deps.js, algorithm) }
	}
	var ws []*worker.Worker
	for _, c := range f.commands {
		argv, err := shlex.Split(c)
		if err != nil || len(argv) == 0 {
			return nil, fmt.Errorf("%w: --worker %q: not a command (%v)", errUsage, c, err)
		}
		w, err := worker.New(nc, worker.Config{
			Command:          argv,
			Dir:              f.dir,
			Env:              f.environ(),
			Procs:            f.procs.min,
			MaxProcs:         f.procs.max,
			ScaleIdle:        f.idle,
			Backlog:          backlog,
			Metrics:          deps.metrics,
			HandshakeTimeout: f.handshake,
			CancelGrace:      f.grace,
			MaxBackoff:       f.maxBackoff,
			MinBackoff:       min(worker.DefaultMinBackoff, f.maxBackoff),
			Logger:           log.With().Str("component", "worker").Logger(),
			RunnerOptions:    opts,
		})
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// shown says, for the banner of pnp up, how many processes of each
// --worker command run: "" without a --worker.
func (f *workerFlags) shown() string {
	switch {
	case len(f.commands) == 0:
		return ""
	case f.procs.max > f.procs.min:
		return fmt.Sprintf("%d to %d processes of each --worker command, following the backlog (--worker-procs %s; one is drained after --worker-idle %s of slack)", f.procs.min, f.procs.max, f.procs.String(), f.idle)
	case f.procs.min == 1:
		return "1 process of each --worker command (--worker-procs N for more, MIN:MAX to follow the backlog)"
	default:
		return fmt.Sprintf("%d processes of each --worker command (--worker-procs MIN:MAX to follow the backlog)", f.procs.min)
	}
}

// environ is what the flags add to a worker process's environment.
func (f *workerFlags) environ() []string {
	env := append([]string(nil), f.env...)
	if f.concurrency != 0 {
		env = append(env, "PNP_WORKER_CONCURRENCY="+strconv.Itoa(f.concurrency))
	}
	return env
}

// check fails early, before connecting, on flags that cannot work.
func (f *workerFlags) check() error {
	if f.procs.min < 1 || f.procs.max < f.procs.min {
		return fmt.Errorf("%w: --worker-procs %s: want N or MIN:MAX with 1 <= MIN <= MAX", errUsage, f.procs.String())
	}
	if f.idle <= 0 {
		return fmt.Errorf("%w: --worker-idle %s: want more than 0", errUsage, f.idle)
	}
	for _, kv := range f.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.ContainsAny(k, " \t\x00") {
			return fmt.Errorf("%w: --worker-env %q: want KEY=VALUE", errUsage, kv)
		}
	}
	if f.concurrency < 0 {
		return fmt.Errorf("%w: --worker-concurrency %d: want at least 1 (0: as the worker's author says)", errUsage, f.concurrency)
	}
	if f.dir != "" {
		if st, err := os.Stat(f.dir); err != nil || !st.IsDir() {
			return fmt.Errorf("%w: --worker-dir %q: not a directory", errUsage, f.dir)
		}
	}
	if f.handshake <= 0 {
		return fmt.Errorf("%w: --worker-handshake-timeout %s: want more than 0", errUsage, f.handshake)
	}
	if f.grace <= 0 {
		return fmt.Errorf("%w: --worker-cancel-grace %s: want more than 0", errUsage, f.grace)
	}
	if f.maxBackoff <= 0 {
		return fmt.Errorf("%w: --worker-max-backoff %s: want more than 0", errUsage, f.maxBackoff)
	}
	for _, c := range f.commands {
		argv, err := shlex.Split(c)
		if err != nil || len(argv) == 0 {
			return fmt.Errorf("%w: --worker %q: not a command", errUsage, c)
		}
		// A failing worker is restarted for as long as pnp runs: a
		// command that cannot be found is a mistake to report now.
		prog := argv[0]
		if f.dir != "" && strings.Contains(prog, "/") && !filepath.IsAbs(prog) {
			prog = filepath.Join(f.dir, prog) // the process starts there
		}
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("%w: --worker %q: %v", errUsage, c, err)
		}
	}
	return nil
}

// runAll runs every function until ctx ends or one fails; then it cancels
// the others and returns every error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(fns))
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = fn(ctx); errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

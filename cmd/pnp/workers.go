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
	"github.com/rs/zerolog"

	"pnpworker/runner"
	"pnpworker/worker"
)

// workerFlags are --worker (repeatable), --worker-procs and the bounds of
// a worker process's life.
type workerFlags struct {
	commands         stringList
	procs            int
	dir              string
	concurrency      int
	env              stringList
	handshake, grace time.Duration
	maxBackoff       time.Duration
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, "; ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func (f *workerFlags) register(fs *flagSet) {
	fs.Var(&f.commands, "worker", "command of a worker process serving algorithms over stdin/stdout (docs/WORKER.md), split like a shell would; repeatable. E.g. '/usr/bin/python3 sdk/python/pnpworker.py examples/python/runner_adapter.py' (name the interpreter that has the adapter's packages: a pyenv python3 first on PATH may not see apt's)")
	fs.IntVar(&f.procs, "worker-procs", 1, "processes to run of each --worker command, each its own instance")
	fs.StringVar(&f.dir, "worker-dir", "", "working directory of the worker processes, where an adapter's relative paths (model files) are resolved; relative paths in --worker are resolved there too. Default: pnp's own")
	fs.Var(&f.env, "worker-env", "KEY=VALUE added to the worker processes' environment (a model's path, the VERSION an adapter reads); repeatable")
	fs.IntVar(&f.concurrency, "worker-concurrency", 0, "requests each worker process serves at once for functions whose author did not say (sets PNP_WORKER_CONCURRENCY; the Python SDK's default is 1: say more only for thread-safe functions)")
	fs.DurationVar(&f.handshake, "worker-handshake-timeout", worker.DefaultHandshakeTimeout, "how long a worker process may take to say hello, loading its models included, before it is killed and restarted")
	fs.DurationVar(&f.grace, "worker-cancel-grace", worker.DefaultCancelGrace, "how long a worker process may take to answer a cancelled request (deadline passed) before it is killed and restarted")
	fs.DurationVar(&f.maxBackoff, "worker-max-backoff", worker.DefaultMaxBackoff, "the longest wait before restarting a worker process that keeps failing; it is restarted at that pace until pnp stops, never given up on")
}

// build splits the commands and makes one worker.Worker per command.
func (f *workerFlags) build(nc *nats.Conn, log zerolog.Logger, opts ...runner.Option) ([]*worker.Worker, error) {
	if f.procs < 1 {
		return nil, fmt.Errorf("%w: --worker-procs %d: want at least 1", errUsage, f.procs)
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
			Procs:            f.procs,
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
	if f.procs < 1 {
		return fmt.Errorf("%w: --worker-procs %d: want at least 1", errUsage, f.procs)
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

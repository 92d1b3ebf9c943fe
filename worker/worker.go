// Package worker serves algorithms written in any language. A worker is a
// long-lived child process that speaks JSON lines on stdin and stdout
// (docs/WORKER.md): it describes its algorithms in a hello, then answers
// requests by id. This package starts the process, reads its hello, and
// turns every algorithm it describes into an ordinary runner.Algorithm
// served by an ordinary runner.Runner: discovery records, heartbeats, queue
// subscriptions, input validation, deadlines, error replies, micro stats and
// drain are the runner's, and the child needs no NATS client at all.
//
// Each process lifetime gets its own runner: when the process dies, the
// requests it held are answered with a retryable 503, its algorithms leave
// discovery, and the process is started again with backoff; once it has said
// hello again, its algorithms come back.
package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"pnpworker/runner"
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout = time.Minute
	DefaultCancelGrace      = 5 * time.Second
	DefaultStopTimeout      = 10 * time.Second
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 10 * time.Second
	DefaultMaxRestarts      = 20
	DefaultStableAfter      = time.Minute
)

// Config configures a Worker. Only Command is required; every zero value
// means the documented default.
type Config struct {
	// Command is the program and its arguments, e.g.
	// {"python3", "sdk/python/pnpworker.py", "examples/python/runner_adapter.py"}.
	Command []string
	// Dir is the process's working directory. Default: the runner's.
	Dir string
	// Env is added to the runner's environment for the process, as
	// "KEY=value". The runner also sets PNP_WORKER_PROTOCOL and
	// PNP_MAX_PAYLOAD.
	Env []string
	// Procs is how many processes of Command run side by side, each its
	// own instance in discovery. Default 1.
	Procs int
	// Logger receives the worker's logs, the process's stderr (one entry
	// per line, with the algorithm names) and its log messages. The zero
	// value discards them.
	Logger zerolog.Logger
	// RunnerOptions are passed to every runner.New (queue group, discovery
	// bucket, drain timeout, ...), after a runner.WithLogger(Logger).
	RunnerOptions []runner.Option
	// HandshakeTimeout bounds the wait for the process's hello, setup
	// (loading a model) included. Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// CancelGrace is how long a process may take to answer a cancelled
	// request before it is killed and restarted. Default
	// DefaultCancelGrace.
	CancelGrace time.Duration
	// StopTimeout is how long a process may take to exit after its stdin
	// is closed on shutdown before it is killed. Default DefaultStopTimeout.
	StopTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a restart; it doubles
	// with each consecutive failure. Defaults DefaultMinBackoff and
	// DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// MaxRestarts is how many consecutive failed lifetimes (a process that
	// stopped within StableAfter of its start) are restarted before Run
	// gives up and returns an error. Default DefaultMaxRestarts.
	MaxRestarts int
	// StableAfter is how long a process must run for its exit not to count
	// as a consecutive failure. Default DefaultStableAfter.
	StableAfter time.Duration
	// MaxLine is the longest line accepted from the process. Default: the
	// server's max payload plus 64 KiB (a reply carries its output and a
	// little framing).
	MaxLine int
}

func (c *Config) setDefaults(nc *nats.Conn) {
	if c.Procs == 0 {
		c.Procs = 1
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.CancelGrace == 0 {
		c.CancelGrace = DefaultCancelGrace
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxRestarts == 0 {
		c.MaxRestarts = DefaultMaxRestarts
	}
	if c.StableAfter == 0 {
		c.StableAfter = DefaultStableAfter
	}
	if c.MaxLine == 0 {
		c.MaxLine = max(int(nc.MaxPayload()), 1<<20) + 64<<10
	}
}

// Validate reports every problem with c (before defaults).
func (c Config) Validate() error {
	var errs []error
	if len(c.Command) == 0 || c.Command[0] == "" {
		errs = append(errs, errors.New("command is empty"))
	}
	for name, d := range map[string]time.Duration{
		"handshake timeout": c.HandshakeTimeout, "cancel grace": c.CancelGrace, "stop timeout": c.StopTimeout,
		"min backoff": c.MinBackoff, "max backoff": c.MaxBackoff, "stable after": c.StableAfter,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("min backoff %s exceeds max backoff %s", c.MinBackoff, c.MaxBackoff))
	}
	if c.Procs < 0 || c.MaxRestarts < 0 || c.MaxLine < 0 {
		errs = append(errs, errors.New("procs, max restarts and max line must not be negative"))
	}
	return errors.Join(errs...)
}

// Worker runs and supervises the processes of one command. Create it with
// New and call Run once.
type Worker struct {
	nc  *nats.Conn
	cfg Config
	log zerolog.Logger
}

// New checks cfg. Nothing is started until Run.
func New(nc *nats.Conn, cfg Config) (*Worker, error) {
	var errs []error
	if nc == nil {
		errs = append(errs, errors.New("nats connection is nil"))
	}
	errs = append(errs, cfg.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	cfg.setDefaults(nc)
	cfg.Command = append([]string(nil), cfg.Command...)
	return &Worker{nc: nc, cfg: cfg, log: cfg.Logger.With().Str("worker", filepath.Base(cfg.Command[len(cfg.Command)-1])).Logger()}, nil
}

// Run starts Procs processes and keeps them serving until ctx is cancelled;
// then each runner deregisters and drains, each process's stdin is closed
// so that it exits, and Run returns nil. It returns an error when a
// process keeps failing (MaxRestarts consecutive failed lifetimes), after
// stopping the others.
func (w *Worker) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, w.cfg.Procs)
	var wg sync.WaitGroup
	for slot := range w.cfg.Procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := w.supervise(ctx, slot)
			if err != nil {
				cancel()
			}
			errc <- err
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// supervise runs one process slot: start, serve, and restart with backoff.
func (w *Worker) supervise(ctx context.Context, slot int) error {
	log := w.log.With().Int("proc", slot).Logger()
	failures := 0
	for {
		started := time.Now()
		err := w.lifetime(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) >= w.cfg.StableAfter {
			failures = 0
		}
		failures++
		if failures > w.cfg.MaxRestarts {
			log.Error().Err(err).Int("failures", failures).Msg("worker process keeps failing; giving up")
			return fmt.Errorf("worker: %s: gave up after %d consecutive failures: %w", w.cfg.Command[0], failures, err)
		}
		backoff := w.cfg.MinBackoff << min(failures-1, 30)
		if backoff > w.cfg.MaxBackoff || backoff <= 0 {
			backoff = w.cfg.MaxBackoff
		}
		log.Warn().Err(err).Int("failures", failures).Dur("backoff", backoff).Msg("worker process stopped; restarting")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

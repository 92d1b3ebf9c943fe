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
// hello again, its algorithms come back. A worker that keeps failing is
// restarted for as long as Run runs, at most MaxBackoff apart: it takes
// down nothing but its own algorithms.
package worker

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/runner"
)

// Defaults of Config.
const (
	DefaultHandshakeTimeout = time.Minute
	DefaultCancelGrace      = 5 * time.Second
	DefaultStopTimeout      = 10 * time.Second
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 10 * time.Second
	DefaultStableAfter      = time.Minute
	DefaultMaxInputDepth    = 512
	DefaultMaxInputNumber   = 1000
	DefaultLogRate          = 100
	DefaultLogBurst         = 1000
	DefaultMaxLogLine       = 4096
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
	// own instance in discovery. Default 1. With MaxProcs above it, it is
	// the least number of processes.
	Procs int
	// MaxProcs, when above Procs, lets the number of processes follow the
	// load between Procs and MaxProcs (docs/WORKER.md, "Scaling"): every
	// ScaleInterval the worker reads each process's load, adds a process
	// when, on two looks in a row, every process is busy with an
	// algorithm and requests for it wait (admitted by a runner, refused
	// as overloaded, or waiting in JOBS per Backlog), and drains and stops
	// the process idle longest once every look for ScaleIdle found one
	// with nothing to do and nothing waiting. While one process has room
	// and jobs wait in another, the jobs beyond each process's share are
	// handed back to the controller (runner.Runner.HandBack) so that the
	// process with room gets some. Zero: Procs, fixed, and nothing is
	// read.
	MaxProcs int
	// ScaleIdle is how long there must have been a process with nothing
	// to do, at every look and with nothing waiting, before one is drained
	// and stopped, never below Procs processes. Default DefaultScaleIdle.
	ScaleIdle time.Duration
	// ScaleInterval is how often the load is read. Default
	// DefaultScaleInterval.
	ScaleInterval time.Duration
	// Backlog, when set, reports how many jobs wait for an algorithm
	// before any runner has them (in JOBS, not yet delivered to a
	// controller); the scaler calls it only when every process serving
	// the algorithm is busy, with a deadline of ScaleInterval (at least
	// a second). After an error it is not called again for that algorithm
	// for a minute; the first error is a warning in the log, those that
	// follow it are logged at debug level until a call succeeds. Nil: the
	// runners' admission is the only signal.
	Backlog func(ctx context.Context, algorithm string) (int, error)
	// Metrics, when set, report the number of processes per algorithm
	// (pnp_worker_processes). Several Workers may share one.
	Metrics *Metrics
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
	// with each consecutive failure (a process that stopped within
	// StableAfter of its start) up to MaxBackoff, and restarts go on at
	// that pace for as long as Run runs: a worker that keeps failing never
	// stops Run. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// StableAfter is how long a process must run for its exit not to count
	// as a consecutive failure. Default DefaultStableAfter.
	StableAfter time.Duration
	// MaxInputDepth and MaxInputNumber bound what is forwarded to the
	// process: an input nesting deeper than MaxInputDepth arrays and
	// objects, or holding a number longer than MaxInputNumber characters,
	// is answered 400 with the JSON pointer of the place, and the process
	// never sees it (valid JSON that a worker's parser may not survive).
	// Defaults DefaultMaxInputDepth and DefaultMaxInputNumber.
	MaxInputDepth, MaxInputNumber int
	// LogRate and LogBurst bound the log entries a process causes with
	// its stderr lines, log messages and ignored stdout lines: LogBurst at
	// once, then LogRate per second. Entries over the budget are dropped,
	// and "worker log lines suppressed" reports how many, at most once a
	// second. Defaults DefaultLogRate and DefaultLogBurst.
	LogRate, LogBurst int
	// MaxLogLine is the longest stderr line or log message logged; a
	// longer one is cut there (and marked "truncated"). Default
	// DefaultMaxLogLine.
	MaxLogLine int
	// MaxLine is the longest line accepted from the process. Default: the
	// server's max payload plus 64 KiB (a reply carries its output and a
	// little framing).
	MaxLine int
}

func (c *Config) setDefaults(nc *nats.Conn) {
	if c.Procs == 0 {
		c.Procs = 1
	}
	if c.MaxProcs < c.Procs {
		c.MaxProcs = c.Procs
	}
	if c.ScaleIdle == 0 {
		c.ScaleIdle = DefaultScaleIdle
	}
	if c.ScaleInterval == 0 {
		c.ScaleInterval = DefaultScaleInterval
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
	if c.StableAfter == 0 {
		c.StableAfter = DefaultStableAfter
	}
	if c.MaxInputDepth == 0 {
		c.MaxInputDepth = DefaultMaxInputDepth
	}
	if c.MaxInputNumber == 0 {
		c.MaxInputNumber = DefaultMaxInputNumber
	}
	if c.LogRate == 0 {
		c.LogRate = DefaultLogRate
	}
	if c.LogBurst == 0 {
		c.LogBurst = DefaultLogBurst
	}
	if c.MaxLogLine == 0 {
		c.MaxLogLine = DefaultMaxLogLine
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
		"scale idle": c.ScaleIdle, "scale interval": c.ScaleInterval,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("min backoff %s exceeds max backoff %s", c.MinBackoff, c.MaxBackoff))
	}
	if c.MaxProcs < 0 {
		errs = append(errs, fmt.Errorf("max procs %d is negative", c.MaxProcs))
	} else if c.MaxProcs > 0 && c.MaxProcs < max(c.Procs, 1) {
		errs = append(errs, fmt.Errorf("max procs %d is below procs %d", c.MaxProcs, max(c.Procs, 1)))
	}
	if c.Procs < 0 || c.MaxLine < 0 || c.LogRate < 0 || c.LogBurst < 0 || c.MaxLogLine < 0 || c.MaxInputDepth < 0 || c.MaxInputNumber < 0 {
		errs = append(errs, errors.New("procs, max input depth, max input number, log rate, log burst, max log line and max line must not be negative"))
	}
	return errors.Join(errs...)
}

// Worker runs and supervises the processes of one command. Create it with
// New and call Run once.
type Worker struct {
	nc   *nats.Conn
	cfg  Config
	log  zerolog.Logger
	pool atomic.Pointer[pool] // the processes, once Run started them

	servingOnce sync.Once
	serving     chan struct{} // closed once a process serves
	failedOnce  sync.Once
	failed      chan struct{} // closed once a process stopped
	algsMu      sync.Mutex
	algs        []*runner.Algorithm // what the latest process to serve said
}

// Serving is closed once a process of the worker said hello and its
// algorithms are served.
func (w *Worker) Serving() <-chan struct{} { return w.serving }

// Failed is closed once a process of the worker stopped, whether or not
// it served first: one that fails at start is restarted with backoff, so
// whoever waits for Serving knows not to wait for it.
func (w *Worker) Failed() <-chan struct{} { return w.failed }

// Algorithms returns the algorithms the latest process to serve described
// in its hello; nil before any did.
func (w *Worker) Algorithms() []*runner.Algorithm {
	w.algsMu.Lock()
	defer w.algsMu.Unlock()
	return append([]*runner.Algorithm(nil), w.algs...)
}

// markServing records what a process serves.
func (w *Worker) markServing(algs []*runner.Algorithm) {
	w.algsMu.Lock()
	w.algs = append(w.algs[:0], algs...)
	w.algsMu.Unlock()
	w.servingOnce.Do(func() { close(w.serving) })
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
	return &Worker{nc: nc, cfg: cfg, log: cfg.Logger.With().Str("worker", filepath.Base(cfg.Command[len(cfg.Command)-1])).Logger(), serving: make(chan struct{}), failed: make(chan struct{})}, nil
}

// Run starts Procs processes and keeps them serving until ctx is cancelled;
// then each runner deregisters and drains, each process's stdin is closed
// so that it exits, and Run returns nil. With MaxProcs above Procs, the
// number of processes follows the load in between (see Config.MaxProcs).
// A process that fails, however often, is restarted with backoff: Run
// never returns because of a worker, so whatever runs beside it (NATS, a
// controller, other runners) keeps running.
func (w *Worker) Run(ctx context.Context) error {
	p := newPool(ctx, w)
	w.pool.Store(p)
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.attach(p)
		defer w.cfg.Metrics.detach(p)
	}
	for range w.cfg.Procs {
		p.add()
	}
	if w.cfg.MaxProcs > w.cfg.Procs {
		p.scale(ctx)
	}
	p.wg.Wait()
	return nil
}

// supervise runs one process slot until its ctx ends: start, serve, and
// restart with capped exponential backoff, logging each restart.
func (w *Worker) supervise(ctx context.Context, s *slot) {
	log := s.logger(w.log)
	failures := 0
	for {
		started := time.Now()
		err := w.lifetime(ctx, log, s)
		if ctx.Err() != nil {
			return
		}
		w.failedOnce.Do(func() { close(w.failed) })
		if time.Since(started) >= w.cfg.StableAfter {
			failures = 0
		}
		failures++
		backoff := w.cfg.MinBackoff << min(failures-1, 30)
		if backoff > w.cfg.MaxBackoff || backoff <= 0 {
			backoff = w.cfg.MaxBackoff
		}
		ev := log.Warn()
		if backoff == w.cfg.MaxBackoff {
			// Failing at the capped pace: loud, but it goes on.
			ev = log.Error()
		}
		ev.Err(err).Int("failures", failures).Dur("backoff", backoff).Msg("worker process stopped; restarting")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

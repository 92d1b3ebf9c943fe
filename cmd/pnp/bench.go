package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/harness/bench"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", "pnp bench [--requests N] [--rounds N] [--inflight N] [--with-metrics] [--with-echo] [--json] [flags]", stdout)
	var (
		lf          logFlags
		nf          natsFlags
		server      = fs.String("server", "", "NATS server URL with JetStream; empty starts an embedded server on 127.0.0.1")
		requests    = fs.Int("requests", bench.DefaultRequests, "measured requests per responder per round")
		rounds      = fs.Int("rounds", bench.DefaultRounds, "rounds per responder, alternating handwritten and runner")
		inflight    = fs.Int("inflight", bench.DefaultInFlight, "requests in flight at once")
		warmup      = fs.Int("warmup", 0, "unmeasured requests before each round (0: min(requests, 2000); -1: none)")
		concurrency = fs.Int("concurrency", 0, "requests each responder works on at once (0: the runner's default, max(4, 2xGOMAXPROCS))")
		noCheck     = fs.Bool("no-output-check", false, "do not validate outputs against the output schema (on both sides)")
		timeout     = fs.Duration("timeout", bench.DefaultRequestTimeout, "time budget of each request")
		maxTime     = fs.Duration("max-time", 10*time.Minute, "give up after this long")
		jsonOut     = fs.Bool("json", false, "print the report as JSON")
		metrics     = fs.Bool("with-metrics", false, "also measure the runner with Prometheus metrics on, in the same rounds, and report the cost (target: at most 3 %)")
		echo        = fs.Bool("with-echo", false, "also measure a raw nats.go echo (no validation, no headers), last in every round, and report runner/echo (target: at least 0.65)")
	)
	lf.register(fs)
	// Credentials only matter with --server; the embedded server has none.
	fs.StringVar(&nf.creds, "creds", env("NATS_CREDS", ""), "NATS credentials file, with --server (env NATS_CREDS)")
	fs.StringVar(&nf.user, "user", env("NATS_USER", ""), "NATS user name, with --server (env NATS_USER)")
	fs.StringVar(&nf.password, "password", env("NATS_PASSWORD", ""), "NATS password, with --server (env NATS_PASSWORD)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *maxTime <= 0 {
		return fmt.Errorf("%w: --max-time must be positive", errUsage)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg := bench.Config{
		URL:             *server,
		Requests:        *requests,
		Rounds:          *rounds,
		InFlight:        *inflight,
		Warmup:          *warmup,
		Concurrency:     *concurrency,
		SkipOutputCheck: *noCheck,
		Timeout:         *timeout,
		Log:             log,
		RunnerLog:       log.With().Str("component", "runner").Logger(),
		Metrics:         *metrics,
		Echo:            *echo,
	}
	if log.GetLevel() > zerolog.DebugLevel {
		// The runner's start and stop lines repeat every round; show them
		// only when asked for debug output.
		cfg.RunnerLog = cfg.RunnerLog.Level(max(log.GetLevel(), zerolog.WarnLevel))
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *server != "" {
		nf.server = *server
		cfg.NATSOptions = nf.options("pnp bench", log)
	}
	ctx, cancel := context.WithTimeout(ctx, *maxTime)
	defer cancel()
	rep, err := bench.Run(ctx, cfg)
	if len(rep.Rounds) > 0 {
		var werr error
		if *jsonOut {
			werr = rep.WriteJSON(stdout)
		} else {
			werr = rep.WriteText(stdout)
		}
		if err == nil {
			err = werr
		}
	}
	return err
}

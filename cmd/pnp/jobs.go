package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/rollout"
)

func cmdController(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("controller", "pnp controller [--server URL] [--max-in-flight N] [flags]", stdout)
	var (
		nf  natsFlags
		lf  logFlags
		mf  metricsFlag
		cfg controller.Config
	)
	nf.register(fs)
	lf.register(fs)
	mf.register(fs)
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", envInt("PNP_MAX_IN_FLIGHT", controller.DefaultMaxInFlight), "jobs dispatched at once by this controller, over all algorithms (env PNP_MAX_IN_FLIGHT)")
	fs.DurationVar(&cfg.AckWait, "ack-wait", controller.DefaultAckWait, "how soon the jobs of a controller that died are taken over; running jobs are kept by heartbeats")
	fs.IntVar(&cfg.MaxAttempts, "max-attempts", controller.DefaultMaxAttempts, "attempts before a job failing with a timeout or 5xx is dead-lettered")
	fs.DurationVar(&cfg.RetryBackoff, "retry-backoff", controller.DefaultRetryBackoff, "wait before the second attempt; doubles for each further one")
	fs.DurationVar(&cfg.MaxRetryBackoff, "max-retry-backoff", controller.DefaultMaxRetryBackoff, "longest wait between attempts")
	fs.DurationVar(&cfg.NoRunnerDelay, "no-runner-delay", controller.DefaultNoRunnerDelay, "wait before offering again a job no runner answered (not an attempt)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", controller.DefaultDrainTimeout, "how long to wait for jobs in flight on shutdown")
	registerJobAgeFlags(fs, &cfg.MaxJobAge, &cfg.MaxUnservedJobAge, ", also when nobody serves its algorithm")
	fs.IntVar(&cfg.MaxNotStarted, "max-not-started", controller.DefaultMaxNotStarted, "deliveries after which a job runners keep refusing without starting it (overloaded, its budget too short) fails")

	fs.IntVar(&cfg.MaxAlgorithms, "max-algorithms", controller.DefaultMaxAlgorithms, "algorithms this controller serves at most; past it, newly registered ones wait (logged)")
	fs.DurationVar(&cfg.ConsumerInactiveThreshold, "consumer-inactive-threshold", controller.DefaultConsumerInactiveThreshold, "how long the JOBS consumer of an algorithm without a live runner and without waiting jobs is kept")
	keep := fs.String("keep-consumers", env("PNP_KEEP_CONSUMERS", ""), "comma-separated algorithms whose JOBS consumers (one per priority) are kept even with no job waiting and no runner: those an autoscaler (KEDA) starts from zero, also declared as with --declare; give every controller the same list (env PNP_KEEP_CONSUMERS)")
	fs.Int64Var(&cfg.SchemaCacheBytes, "schema-cache-bytes", controller.DefaultSchemaCacheBytes, "estimated heap of the compiled registered schemas kept")
	cfg.MaxReferencedOutputBytes = controller.DefaultMaxReferencedOutputBytes
	fs.Var(byteSize{&cfg.MaxReferencedOutputBytes}, "max-referenced-output", "largest output a runner stored by reference (output_ref) that is read back and checked against its schema; a larger one fails with 502 (-1: accept them unchecked)")
	fs.DurationVar(&cfg.SchemaCompileTimeout, "schema-compile-timeout", controller.DefaultSchemaCompileTimeout, "how long a job waits for a registered schema to compile before going on unchecked")
	registerRetentionFlags(fs, &cfg.Store)
	var of objectFlags
	of.register(fs, &cfg.Store)
	fs.IntVar(&cfg.Store.Replicas, "replicas", 1, "stream replicas in a cluster")
	registerStoreLimits(fs, &cfg.Store, true)
	registerShadowFlags(fs, &cfg.Shadow.Concurrency, &cfg.Shadow.Compare, "jobs past it are not shadowed (counted)")
	fs.Float64Var(&cfg.History.Rate, "history-rate", envFloat("PNP_HISTORY_RATE", rollout.DefaultHistoryRate), "share of succeeded jobs recorded in HISTORY for pnp replay, 0..1; negative: none (env PNP_HISTORY_RATE)")
	fs.BoolVar(&cfg.Bind, "no-provision", false, "use existing streams instead of creating them (for credentials that may not create streams)")
	var pf placementFlags
	pf.register(fs)
	declare := fs.String("declare", os.Getenv("PNP_DECLARE"), "comma-separated algorithms to mark as known at start, so their jobs are accepted before any runner registers (scale from zero; --keep-consumers are declared too; env PNP_DECLARE)")
	if err := fs.parse(args); err != nil {
		return err
	}
	cfg.Declare = nameList(*declare)
	if err := of.apply(&cfg.Store); err != nil {
		return err
	}
	if err := pf.apply(&cfg.Store, &cfg.Routes, &cfg.Shadow.Stream, &cfg.History); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.KeepConsumers = nameList(*keep)
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if mf.addr != "" {
		reg := newRegistry()
		cfg.Metrics = reg
		stop, err := serveMetrics(ctx, mf.addr, reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := nf.check(); err != nil {
		return err
	}
	nc, err := nf.connectAndWait(ctx, "pnp controller", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if cfg.JetStream, err = nf.jetStream(nc); err != nil {
		return err
	}
	c, err := controller.New(nc, cfg)
	if err != nil {
		return err
	}
	if err := c.Run(ctx); err != nil {
		return err
	}
	return drainOnStop(nc, log)
}

func cmdSubmit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("submit", "pnp submit [flags] <algorithm> <json | @file | ->", stdout)
	var (
		nf            natsFlags
		lf            logFlags
		opts          jobs.SubmitOptions
		wait          = fs.Bool("wait", false, "wait for the result and print it; exit 1 when the job failed")
		waitTimeout   = fs.Duration("wait-timeout", 0, "wait at most this long for the result, then exit 1 (implies --wait; 0: wait until interrupted)")
		requireRunner = fs.Bool("require-runner", false, "refuse to submit when no runner is registered for the algorithm")
		allowUnknown  = fs.Bool("allow-unknown", false, "submit even for an algorithm no runner has ever registered for and nobody declared (by default refused as a likely typo, naming the closest known algorithms)")
	)
	nf.register(fs)
	lf.register(fs)
	fs.StringVar(&opts.ID, "id", "", "job id (default: a new unique id); a job id submitted twice within the duplicate window is stored once")
	fs.DurationVar(&opts.Timeout, "timeout", 0, "time budget of this job; can only shorten the algorithm's timeout")
	fs.StringVar(&opts.Notify, "notify", "", "subject to publish the result record to when the job ends")
	priority := fs.String("priority", "normal", "high, normal or low: waiting high jobs go first, 7 of every 10 dispatches while all wait (2 normal, 1 low), so lower ones still progress")
	in := fs.Duration("in", 0, "delay the job: it enters the queue after this long (rounded up to the second); 'pnp result' says scheduled until then")
	at := fs.String("at", "", "delay the job until this time, RFC 3339 (2026-12-24T18:00:00Z)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: want <algorithm> and <json | @file | ->, got %d arguments", errUsage, len(pos))
	}
	if opts.NotBefore, err = notBefore(*in, *at, time.Now()); err != nil {
		return err
	}
	if opts.Priority, err = jobs.ParsePriority(*priority); err != nil {
		return fmt.Errorf("%w: --%v", errUsage, err)
	}
	input, err := readInput(pos[1])
	if err != nil {
		return err
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, true)
	if err != nil {
		return err
	}
	defer nc.Close()
	if !*allowUnknown {
		if err := store.CheckKnown(ctx, pos[0]); err != nil {
			if errors.Is(err, jobs.ErrUnknownAlgorithm) {
				return fmt.Errorf("%w; not submitted (--allow-unknown submits it anyway)", err)
			}
			return err
		}
	}
	if err := checkRunners(ctx, store, pos[0], *requireRunner, stderr); err != nil {
		return err
	}
	sub, err := store.Submit(ctx, pos[0], input, opts)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, safe(sub.ID))
	if !sub.NotBefore.IsZero() {
		fmt.Fprintf(stderr, "job %s is scheduled for %s\n", safe(sub.ID), sub.NotBefore.Local().Format(time.RFC3339))
	}
	if sub.Duplicate {
		fmt.Fprintf(stderr, "job %s was already submitted (stream sequence %d); stored once\n", safe(sub.ID), sub.Seq)
	}
	if !*wait && *waitTimeout == 0 {
		return nil
	}
	return waitAndPrint(ctx, store, sub.ID, *waitTimeout, "", stdout, stderr)
}

// notBefore is the time --in or --at delay a job to: zero for neither.
func notBefore(in time.Duration, at string, now time.Time) (time.Time, error) {
	switch {
	case in != 0 && at != "":
		return time.Time{}, fmt.Errorf("%w: --in and --at: give one, not both", errUsage)
	case in < 0:
		return time.Time{}, fmt.Errorf("%w: --in %s is negative", errUsage, in)
	case in > 0:
		return now.Add(in), nil
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: --at %q: want an RFC 3339 time such as 2026-12-24T18:00:00Z", errUsage, at)
		}
		return t, nil
	}
	return time.Time{}, nil
}

// runnerCheckTimeout bounds the look-up of an algorithm's runners before a
// submit.
const runnerCheckTimeout = 3 * time.Second

// checkRunners warns on stderr when no runner is registered for algorithm
// (the job will wait for one), or refuses when require is set. The check
// is one stream info request, which the producer role of nats.conf may
// make; a check that fails is a warning too, or the refusal's reason.
func checkRunners(ctx context.Context, store *jobs.Store, algorithm string, require bool, stderr io.Writer) error {
	lctx, cancel := context.WithTimeout(ctx, runnerCheckTimeout)
	defer cancel()
	n, err := store.RegisteredRunners(lctx, algorithm)
	switch {
	case err != nil && require:
		return fmt.Errorf("cannot check for runners of %s (--require-runner): %v", algorithm, err)
	case err != nil:
		fmt.Fprintf(stderr, "warning: cannot check for runners of %s: %v\n", algorithm, safe(err.Error()))
	case n == 0 && require:
		return fmt.Errorf("no runner is registered for %s; not submitted (--require-runner)", algorithm)
	case n == 0:
		fmt.Fprintf(stderr, "warning: no runner is registered for %s; the job waits until one registers, or until it expires (the controller's --max-job-age)\n", algorithm)
	}
	return nil
}

// readInput reads a job body given as JSON, @file or - (stdin).
func readInput(arg string) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	switch {
	case arg == "-":
		b, err = io.ReadAll(os.Stdin)
	case strings.HasPrefix(arg, "@"):
		b, err = os.ReadFile(arg[1:])
	default:
		b = []byte(arg)
	}
	if err != nil {
		return nil, fmt.Errorf("reading input: %w", err)
	}
	return b, nil
}

func waitAndPrint(ctx context.Context, store *jobs.Store, id string, timeout time.Duration, out string, stdout, stderr io.Writer) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	start := time.Now()
	res, err := store.WaitResult(ctx, id, func(r jobs.Result) {
		if r.Status == jobs.StatusRunning && r.Progress != nil {
			fmt.Fprintf(stderr, "running: %s\n", safe(progressText(r.Progress)))
			return
		}
		msg := ""
		if r.Error != nil {
			msg = fmt.Sprintf("%d %s", r.Error.Code, safe(r.Error.Message))
		}
		next := ""
		if r.NextAttemptAt != nil {
			next = " at " + r.NextAttemptAt.Local().Format(time.TimeOnly)
		}
		fmt.Fprintf(stderr, "attempt %d failed (%s); retrying%s\n", r.Attempts, msg, next)
	})
	if errors.Is(err, context.DeadlineExceeded) && errors.Is(err, jobs.ErrCorruptResult) && timeout > 0 {
		return fmt.Errorf("no result for job %s after %s: the record under its key is not its result (%w); the controller replaces it when the job runs",
			id, time.Since(start).Round(time.Millisecond), jobs.ErrCorruptResult)
	}
	if errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
		return fmt.Errorf("no result for job %s after %s: it is still waiting or running (see 'pnp jobs'); read it later with 'pnp result %s'",
			id, time.Since(start).Round(time.Millisecond), id)
	}
	if err != nil {
		return err
	}
	return printResult(ctx, store, res, out, stdout)
}

func cmdResult(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("result", "pnp result [--wait] [-o FILE] <job id>", stdout)
	var (
		nf          natsFlags
		lf          logFlags
		out         = fs.String("o", "", "also write the job's output JSON to this file, fetching it from the object store when the record has output_ref ('-' for stdout, instead of the record)")
		wait        = fs.Bool("wait", false, "wait for the final result if there is none yet")
		waitTimeout = fs.Duration("wait-timeout", 0, "wait at most this long, then exit 1 (implies --wait; 0: wait until interrupted)")
	)
	nf.register(fs)
	lf.register(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: want one job id", errUsage)
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	if *wait || *waitTimeout > 0 {
		return waitAndPrint(ctx, store, pos[0], *waitTimeout, *out, stdout, stderr)
	}
	res, err := store.Result(ctx, pos[0])
	if errors.Is(err, jobs.ErrNoResult) {
		return fmt.Errorf("no result for job %s: it is still waiting or running, was never submitted, or its result expired", pos[0])
	}
	if err != nil {
		return err
	}
	return printResult(ctx, store, res, *out, stdout)
}

// printResult prints the record, or with out the output to out (and the
// record too unless out is stdout), and turns a failure into the error.
func printResult(ctx context.Context, store *jobs.Store, res jobs.Result, out string, stdout io.Writer) error {
	if out != "-" {
		if err := writeJSON(stdout, res); err != nil {
			return err
		}
	}
	if out != "" {
		if err := writeResultOutput(ctx, store, res, out, stdout); err != nil {
			return err
		}
	}
	return res.Err()
}

func cmdJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) > 0 && args[0] == "ls":
		return cmdJobsLs(ctx, args[1:], stdout, stderr)
	case len(args) > 0 && args[0] == "purge":
		return cmdJobsPurge(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("jobs", "pnp jobs [--json] | pnp jobs ls [flags] (list jobs by their result records; pnp jobs ls --help)\n       pnp jobs purge <algorithm>   drop the algorithm's waiting jobs (admin role)", stdout)
	var (
		nf      natsFlags
		lf      logFlags
		jsonOut = fs.Bool("json", false, "print as JSON")
	)
	nf.register(fs)
	lf.register(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	queues, err := store.Queues(ctx)
	if err != nil {
		return err
	}
	if *jsonOut {
		return writeJSON(stdout, queues)
	}
	if len(queues) == 0 {
		fmt.Fprintln(stderr, "no jobs, dead letters or runners")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ALGORITHM\tWAITING\tIN FLIGHT\tDEAD\tRUNNERS")
	for _, q := range queues {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", safe(q.Algorithm), q.Waiting, q.InFlight, q.Dead, q.Runners)
	}
	return tw.Flush()
}

func cmdDead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stdout, "usage: pnp dead ls|replay [flags]")
		fmt.Fprintln(stdout, "  ls                       list dead letters: jobs that failed for good, with the reason")
		fmt.Fprintln(stdout, "  replay <job id>... | --all  submit dead letters again under their job ids")
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("dead "+sub, "pnp dead "+sub+" [flags]", stdout)
	var (
		nf        natsFlags
		lf        logFlags
		algorithm = fs.String("algorithm", "", "only this algorithm's dead letters")
		jsonOut   bool
		all       bool
	)
	nf.register(fs)
	lf.register(fs)
	switch sub {
	case "ls":
		fs.BoolVar(&jsonOut, "json", false, "print the dead letters as JSON, with their bodies")
	case "replay":
		fs.usage = "pnp dead replay [flags] <job id>... | --all"
		fs.BoolVar(&all, "all", false, "replay every dead letter (of --algorithm, if given)")
	default:
		return fmt.Errorf("%w: unknown subcommand %q (want ls or replay)", errUsage, sub)
	}
	ids, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if sub == "ls" && len(ids) > 0 {
		return fmt.Errorf("%w: ls takes no arguments", errUsage)
	}
	if sub == "replay" && all == (len(ids) > 0) {
		return fmt.Errorf("%w: name the job ids to replay, or --all", errUsage)
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	if sub == "replay" {
		return replay(ctx, store, *algorithm, ids, stdout)
	}
	letters, err := store.DeadLetters(ctx, *algorithm)
	if err != nil {
		return err
	}
	return printDeadLetters(stdout, stderr, letters, jsonOut)
}

// deadLetterJSON is a dead letter as `pnp dead ls --json` prints it.
type deadLetterJSON struct {
	Seq       uint64      `json:"seq"`
	JobID     string      `json:"job_id"`
	Algorithm string      `json:"algorithm"`
	Code      int         `json:"code"`
	Reason    string      `json:"reason"`
	Attempts  int         `json:"attempts"`
	DeadAt    time.Time   `json:"dead_at"`
	Header    nats.Header `json:"header"`
	Body      string      `json:"body"`
}

func printDeadLetters(stdout, stderr io.Writer, letters []jobs.DeadLetter, jsonOut bool) error {
	if jsonOut {
		out := make([]deadLetterJSON, 0, len(letters))
		for _, d := range letters {
			out = append(out, deadLetterJSON{d.Seq, d.JobID, d.Algorithm, d.Code, d.Reason, d.Attempts, d.DeadAt, d.Header, string(d.Data)})
		}
		return writeJSON(stdout, out)
	}
	if len(letters) == 0 {
		fmt.Fprintln(stderr, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tJOB\tALGORITHM\tCODE\tATTEMPTS\tDEAD SINCE\tREASON")
	for _, d := range letters {
		reason := []rune(d.Reason)
		if len(reason) > 80 {
			reason = append(reason[:77], []rune("...")...)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%d\t%s\t%s\n", d.Seq, safe(d.JobID), safe(d.Algorithm), d.Code, d.Attempts,
			d.DeadAt.Local().Format(time.DateTime), safe(string(reason)))
	}
	return tw.Flush()
}

// replay replays the dead letters of ids (all of algorithm's when none)
// and prints what became of each.
func replay(ctx context.Context, store *jobs.Store, algorithm string, ids []string, stdout io.Writer) error {
	done, notFound := store.ReplayDead(ctx, algorithm, ids)
	if notFound != nil && !errors.Is(notFound, jobs.ErrNoDeadLetter) {
		return notFound
	}
	var errs []error
	for _, r := range done {
		d, sub := r.Letter, r.Submission
		switch {
		case errors.Is(r.Err, jobs.ErrAlreadySucceeded):
			fmt.Fprintf(stdout, "%s already succeeded; dead letter %d removed\n", safe(d.JobID), d.Seq)
		case r.Err != nil:
			errs = append(errs, r.Err)
		case sub.Duplicate:
			fmt.Fprintf(stdout, "%s already replayed (dead letter %d)\n", safe(sub.ID), d.Seq)
		default:
			fmt.Fprintf(stdout, "%s replayed (dead letter %d, now job sequence %d)\n", safe(sub.ID), d.Seq, sub.Seq)
		}
	}
	if len(ids) == 0 && len(done) == 0 {
		fmt.Fprintln(stdout, "no dead letters")
	}
	return errors.Join(append(errs, notFound)...)
}

// openStore builds the logger, connects, and binds to the job streams.
// With provision, streams that do not exist yet are created with the
// defaults, so a producer can submit before any controller ever ran.
func openStore(ctx context.Context, nf *natsFlags, lf *logFlags, stderr io.Writer, provision bool) (*nats.Conn, *jobs.Store, error) {
	nc, js, err := openJetStream(nf, lf, stderr, "pnp")
	if err != nil {
		return nil, nil, err
	}
	store, err := jobs.OpenStore(ctx, js, jobs.StoreConfig{})
	if errors.Is(err, jobs.ErrNotProvisioned) {
		if provision {
			store, err = jobs.Provision(ctx, js, jobs.StoreConfig{})
		} else {
			err = fmt.Errorf("no job streams on %s yet: start 'pnp controller' or 'pnp up'", nf.server)
		}
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, store, nil
}

// parseInterleaved parses flags placed before, between or after the
// positional arguments (`pnp submit alg '{}' --wait`) and returns the
// positional ones. Everything after "--" is positional.
func parseInterleaved(fs *flagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			// parse words the error (and prints --help) like every command.
			return nil, fs.parse(args)
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// envInt reads an integer from the environment, or returns def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// nameList splits a comma-separated list of names, dropping blanks.
func nameList(s string) []string {
	var names []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			names = append(names, a)
		}
	}
	return names
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/internal/imagefetch"
	"github.com/pnpworker/pnpworker/internal/logging"
	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// flagSet wraps flag.FlagSet so that --help prints to stdout and parse errors
// become one line.
type flagSet struct {
	*flag.FlagSet
	usage  string
	stdout io.Writer
}

func newFlagSet(name, usage string, stdout io.Writer) *flagSet {
	fs := flag.NewFlagSet("pnp "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagSet{FlagSet: fs, usage: usage, stdout: stdout}
}

// parse parses args; it returns flag.ErrHelp after printing help, or an
// errUsage error. No command takes positional arguments, so one is an error:
// flag parsing stops at it, and the flags after it would be ignored.
func (f *flagSet) parse(args []string) error {
	err := f.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(f.stdout, "usage: %s\n\n", f.usage)
		f.SetOutput(f.stdout)
		f.PrintDefaults()
		f.SetOutput(io.Discard)
		return flag.ErrHelp
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, f.Arg(0))
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// logFlags is --log-level.
type logFlags struct{ level string }

func (l *logFlags) register(fs *flagSet) {
	fs.StringVar(&l.level, "log-level", env("PNP_LOG_LEVEL", "info"), "log level: trace, debug, info, warn, error (env PNP_LOG_LEVEL)")
}

func (l *logFlags) logger(stderr io.Writer) (zerolog.Logger, error) {
	log, err := logging.New(stderr, strings.ToLower(l.level))
	if err != nil {
		return log, fmt.Errorf("%w: %v", errUsage, err)
	}
	return log, nil
}

// natsFlags are the connection flags shared by every client command.
type natsFlags struct {
	server      string
	creds       string
	user        string
	password    string
	inboxPrefix string
	jsDomain    string
}

func (n *natsFlags) register(fs *flagSet) {
	fs.StringVar(&n.server, "server", env("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma separated (env NATS_URL)")
	fs.StringVar(&n.creds, "creds", env("NATS_CREDS", ""), "NATS credentials file (env NATS_CREDS)")
	fs.StringVar(&n.user, "user", env("NATS_USER", ""), "NATS user name (env NATS_USER)")
	fs.StringVar(&n.password, "password", env("NATS_PASSWORD", ""), "NATS password (env NATS_PASSWORD)")
	fs.StringVar(&n.inboxPrefix, "inbox-prefix", env("NATS_INBOX_PREFIX", ""), "custom inbox prefix for replies, for accounts with private inboxes (env NATS_INBOX_PREFIX)")
	fs.StringVar(&n.jsDomain, "js-domain", env("NATS_JS_DOMAIN", ""), "JetStream domain holding the streams and buckets, e.g. the hub's when connected to a leaf node; empty: the JetStream of the server connected to (env NATS_JS_DOMAIN)")
}

// check reports a --js-domain that is not one subject token, before a
// long-running command waits for NATS.
func (n *natsFlags) check() error {
	if n.jsDomain != "" && (strings.ContainsAny(n.jsDomain, " \t\r\n.*>") || !utf8.ValidString(n.jsDomain)) {
		return fmt.Errorf("%w: --js-domain (NATS_JS_DOMAIN) %q: want one subject token, no dots, spaces or wildcards", errUsage, n.jsDomain)
	}
	return nil
}

// jetStream returns nc's JetStream context in --js-domain: every command
// reaches JetStream through it, so one flag moves them all to the hub's
// JetStream when they connect to a leaf node.
func (n *natsFlags) jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	if n.jsDomain == "" {
		return jetstream.New(nc)
	}
	return jetstream.NewWithDomain(nc, n.jsDomain)
}

// runnerOptions are the runner options of the connection flags: the
// JetStream domain discovery, routes and objects are reached in.
func (n *natsFlags) runnerOptions() []runner.Option {
	if n.jsDomain == "" {
		return nil
	}
	return []runner.Option{runner.WithJetStreamDomain(n.jsDomain)}
}

func (n *natsFlags) options(name string, log zerolog.Logger) []nats.Option {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("disconnected from NATS")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats error")
		}),
	}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.user != "" {
		opts = append(opts, nats.UserInfo(n.user, n.password))
	}
	if n.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(n.inboxPrefix))
	}
	return opts
}

// drainOnStop drains nc when a long-running command stops. With NATS away there
// is nothing to flush to and nowhere to deregister: it closes the
// connection, says so, and the command still stops cleanly (registrations
// expire by themselves, unacknowledged jobs are delivered again).
func drainOnStop(nc *nats.Conn, log zerolog.Logger) error {
	err := nc.Drain()
	if errors.Is(err, nats.ErrConnectionReconnecting) {
		log.Warn().Msg("NATS is unreachable: stopped without draining the connection")
		return nil
	}
	return err
}

// connect connects once and fails with one clear line: for commands that
// answer a question and exit.
func (n *natsFlags) connect(name string, log zerolog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(n.server, append(n.options(name, log), nats.Timeout(3*time.Second))...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v", n.server, err)
	}
	return nc, nil
}

// openJetStream builds the logger of lf, connects as name and returns the
// connection with its JetStream context: what every one-shot command that
// reads or writes streams starts with. The caller closes the connection.
func openJetStream(nf *natsFlags, lf *logFlags, stderr io.Writer, name string) (*nats.Conn, jetstream.JetStream, error) {
	log, err := lf.logger(stderr)
	if err != nil {
		return nil, nil, err
	}
	if err := nf.check(); err != nil {
		return nil, nil, err
	}
	nc, err := nf.connect(name, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := nf.jetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// connectAndWait connects, retrying until NATS is there or ctx ends: long-
// running processes do not depend on start order.
func (n *natsFlags) connectAndWait(ctx context.Context, name string, log zerolog.Logger) (*nats.Conn, error) {
	connected := make(chan struct{}, 1)
	opts := append(n.options(name, log),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(*nats.Conn) {
			select {
			case connected <- struct{}{}:
			default:
			}
		}),
	)
	nc, err := nats.Connect(n.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to NATS at %s: %v", n.server, err)
	}
	if nc.IsConnected() {
		return nc, nil
	}
	log.Warn().Str("server", n.server).Msg("NATS not reachable yet; retrying until it is")
	select {
	case <-connected:
		log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("connected to NATS")
		return nc, nil
	case <-ctx.Done():
		nc.Close()
		return nil, fmt.Errorf("gave up waiting for NATS at %s: %w", n.server, ctx.Err())
	}
}

// registerAlgorithmsFlag adds --algorithms into algs: the built-in
// algorithms pnp runner and pnp up serve.
func registerAlgorithmsFlag(fs *flagSet, algs *string) {
	fs.StringVar(algs, "algorithms", env("PNP_ALGORITHMS", "all"), "comma-separated built-in algorithms to serve, all, or none (env PNP_ALGORITHMS)")
}

// imageFlags are the settings of the image algorithms (meme_classifier,
// image_info): the template gallery, the fetch allowlist and the memory
// all image decodes of the process may hold at once.
type imageFlags struct{ gallery, allow, decodeBudget, buckets string }

func (f *imageFlags) register(fs *flagSet) {
	fs.StringVar(&f.gallery, "gallery", env("PNP_GALLERY", ""), "meme_classifier template folder (label = file name, or sub-folder name); empty: the built-in demo gallery (env PNP_GALLERY)")
	fs.StringVar(&f.allow, "fetch-allow", env("PNP_FETCH_ALLOW", ""), "comma-separated CIDRs or host:port the image fetcher may reach although they are private or loopback (env PNP_FETCH_ALLOW)")
	fs.StringVar(&f.buckets, "object-buckets", env("PNP_OBJECT_BUCKETS", objref.InputsBucket+","+objref.UploadsBucket), "comma-separated object store buckets obj://<bucket>/<name> image URLs may name, read over this process's NATS connection; names match whole (env PNP_OBJECT_BUCKETS)")
	fs.StringVar(&f.decodeBudget, "decode-budget", env("PNP_DECODE_BUDGET", "256MiB"), "memory all image decodes of this process may hold at once, e.g. 256MiB; also the largest one image may take; a request finding it full is answered 503 not started (env PNP_DECODE_BUDGET)")
}

// objectBuckets returns the buckets obj:// URLs may name.
func (f *imageFlags) objectBuckets() []string {
	b := imagefetch.ParseAllow(f.buckets)
	if b == nil {
		b = []string{} // none, not the default
	}
	return b
}

// budget returns the process's decode budget.
func (f *imageFlags) budget() (*imagefetch.Budget, error) {
	n, err := imagefetch.ParseSize(f.decodeBudget)
	if err == nil && n == 0 {
		err = fmt.Errorf("decode budget 0 would refuse every image")
	}
	if err != nil {
		return nil, fmt.Errorf("%w: --decode-budget (PNP_DECODE_BUDGET): %v", errUsage, err)
	}
	return imagefetch.NewBudget(n)
}

// objectFlags are the limits of the object store buckets (inputs,
// outputs, uploads, and the outputs bucket of each algorithm named), for
// the commands that provision them.
type objectFlags struct{ maxBytes, uploadsMaxBytes, algorithmMaxBytes, algorithms string }

func (f *objectFlags) register(fs *flagSet, cfg *jobs.StoreConfig) {
	fs.DurationVar(&cfg.Inputs.TTL, "input-ttl", jobs.DefaultInputTTL, "how long objects uploaded to the inputs and uploads buckets (pnp put, the HTTP API) are kept")
	fs.StringVar(&f.maxBytes, "objects-max-bytes", "1GiB", "size cap of each of the inputs and outputs object store buckets, e.g. 1GiB")
	fs.StringVar(&f.uploadsMaxBytes, "uploads-max-bytes", "256MiB", "size cap of the uploads object store bucket (HTTP uploads), e.g. 256MiB")
	fs.StringVar(&f.algorithms, "output-algorithms", env("PNP_OUTPUT_ALGORITHMS", ""), "comma-separated algorithms whose own outputs bucket outputs_<algorithm> to create, for runners that may not (--no-provision) (env PNP_OUTPUT_ALGORITHMS)")
	fs.StringVar(&f.algorithmMaxBytes, "algorithm-outputs-max-bytes", "64MiB", "size cap of each outputs_<algorithm> bucket, e.g. 64MiB")
	cfg.InputsMaxObjectBytes = jobs.DefaultInputsMaxObjectBytes
	fs.Var(byteSize{&cfg.InputsMaxObjectBytes}, "input-max-object", "largest object the inputs bucket takes, enforced by the server whatever the client (chunks of at most 128 KiB); -1: none")
}

// apply sets the parsed limits in cfg.
func (f *objectFlags) apply(cfg *jobs.StoreConfig) error {
	for _, l := range []struct {
		flag, v string
		to      []*int64
	}{
		{"--objects-max-bytes", f.maxBytes, []*int64{&cfg.Inputs.MaxBytes, &cfg.Outputs.MaxBytes}},
		{"--uploads-max-bytes", f.uploadsMaxBytes, []*int64{&cfg.Uploads.MaxBytes}},
		{"--algorithm-outputs-max-bytes", f.algorithmMaxBytes, []*int64{&cfg.AlgorithmOutputs.MaxBytes}},
	} {
		n, err := imagefetch.ParseSize(l.v)
		if err != nil || n <= 0 {
			return fmt.Errorf("%w: %s %q: want a positive size such as 1GiB", errUsage, l.flag, l.v)
		}
		for _, p := range l.to {
			*p = n
		}
	}
	for _, a := range strings.Split(f.algorithms, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		if !discovery.ValidAlgorithmName(a) {
			return fmt.Errorf("%w: --output-algorithms: %q is not an algorithm name", errUsage, a)
		}
		cfg.OutputAlgorithms = append(cfg.OutputAlgorithms, a)
	}
	return nil
}

// byteSize is a flag.Value for a size in bytes: a whole number with an
// optional binary unit — K, M, G or T, each optionally followed by "iB" or
// "B" (so 512MB and 512MiB are both 512×2²⁰) — or -1 for no limit.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return ""
	}
	n := *b.v
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n > 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	if t == "-1" {
		*b.v = -1
		return nil
	}
	upper := strings.ToUpper(t)
	upper = strings.TrimSuffix(strings.TrimSuffix(upper, "B"), "I")
	shift := uint(0)
	if upper != "" {
		switch upper[len(upper)-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			upper = upper[:len(upper)-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(upper), 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return fmt.Errorf("want a size such as 512MiB or 2GiB, or -1 for no limit; got %q", s)
	}
	*b.v = n << shift
	return nil
}

// registerJobAgeFlags adds --max-job-age into maxAge and
// --max-unserved-job-age into maxUnserved, shared by pnp controller and
// pnp up; more ends the help of --max-job-age.
func registerJobAgeFlags(fs *flagSet, maxAge, maxUnserved *time.Duration, more string) {
	fs.DurationVar(maxAge, "max-job-age", controller.DefaultMaxJobAge, "a job waiting longer than this for an outcome fails as expired and is dead-lettered"+more)
	fs.DurationVar(maxUnserved, "max-unserved-job-age", controller.DefaultMaxUnservedJobAge, "a job of an algorithm no runner has ever registered for fails as expired after this (at most --max-job-age)")
}

// registerRetentionFlags adds the flags of how long the job streams keep
// what they hold (--result-ttl, --result-history, --duplicate-window,
// --dead-max-age), shared by the commands that provision them.
func registerRetentionFlags(fs *flagSet, cfg *jobs.StoreConfig) {
	fs.DurationVar(&cfg.ResultTTL, "result-ttl", jobs.DefaultResultTTL, "how long results are kept")
	fs.IntVar(&cfg.ResultHistory, "result-history", 1, "records kept per job id in the results bucket (1..64)")
	fs.DurationVar(&cfg.DuplicateWindow, "duplicate-window", jobs.DefaultDuplicateWindow, "how long JOBS de-duplicates job ids")
	fs.DurationVar(&cfg.DeadMaxAge, "dead-max-age", 0, "how long dead letters are kept; 0 keeps them until replayed")
}

// registerStoreLimits adds the storage limit flags of cfg to fs, with the
// defaults shown in --help; discovery adds the discovery bucket's.
func registerStoreLimits(fs *flagSet, cfg *jobs.StoreConfig, discoveryToo bool) {
	cfg.JobsMaxBytes, cfg.JobsMaxMsgs = jobs.DefaultJobsMaxBytes, jobs.DefaultJobsMaxMsgs
	cfg.DeadMaxBytes, cfg.DeadMaxMsgs = jobs.DefaultDeadMaxBytes, jobs.DefaultDeadMaxMsgs
	cfg.ResultsMaxBytes = jobs.DefaultResultsMaxBytes
	fs.Var(byteSize{&cfg.JobsMaxBytes}, "jobs-max-bytes", "size limit of stream JOBS; a full JOBS refuses new jobs (-1: none)")
	fs.Int64Var(&cfg.JobsMaxMsgs, "jobs-max-msgs", cfg.JobsMaxMsgs, "jobs stream JOBS holds at most; more are refused (-1: no limit)")
	fs.Int64Var(&cfg.JobsMaxPerAlgorithm, "jobs-max-per-algorithm", 0, "jobs one algorithm may have waiting in JOBS, counted apart for each priority; more of its jobs are refused, other algorithms' are not (0: 10000, at most half of --jobs-max-msgs; -1: no limit); times the largest job, it is what one algorithm may take of --jobs-max-bytes")
	fs.Var(byteSize{&cfg.DeadMaxBytes}, "dead-max-bytes", "size limit of stream DEAD; the oldest dead letters make room (-1: none)")
	fs.Int64Var(&cfg.DeadMaxMsgs, "dead-max-msgs", cfg.DeadMaxMsgs, "dead letters kept at most; the oldest make room (-1: no limit)")
	fs.Var(byteSize{&cfg.ResultsMaxBytes}, "results-max-bytes", "size limit of the results bucket; the oldest results make room, as if expired (-1: none)")
	cfg.SchedulesMaxBytes = jobs.DefaultSchedulesMaxBytes
	fs.Var(byteSize{&cfg.SchedulesMaxBytes}, "schedules-max-bytes", "size limit of stream SCHEDULES (delayed jobs, schedules, and the jobs they fired in the last hour); full, the oldest go, so size it for the delayed jobs kept waiting")
	if discoveryToo {
		cfg.Discovery.MaxBytes = discovery.DefaultMaxBytes
		fs.Var(byteSize{&cfg.Discovery.MaxBytes}, "discovery-max-bytes", "size limit of the discovery bucket (-1: none)")
	}
}

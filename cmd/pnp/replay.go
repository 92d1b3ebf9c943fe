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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/rollout"
)

func envFloat(name string, def float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(name), 64); err == nil {
		return v
	}
	return def
}

// listFlag collects a repeatable string flag.
type listFlag struct{ v *[]string }

func (l listFlag) String() string {
	if l.v == nil {
		return ""
	}
	return strings.Join(*l.v, ",")
}

func (l listFlag) Set(s string) error {
	if !strings.HasPrefix(s, "/") && s != "" {
		return fmt.Errorf("%q is not a JSON pointer (it starts with /)", s)
	}
	*l.v = append(*l.v, s)
	return nil
}

// fieldTolerance collects repeatable --field-tolerance /ptr=T flags.
type fieldTolerance struct{ m map[string]float64 }

func (f fieldTolerance) String() string {
	var parts []string
	for k, v := range f.m {
		parts = append(parts, fmt.Sprintf("%s=%g", k, v))
	}
	return strings.Join(parts, ",")
}

func (f fieldTolerance) Set(s string) error {
	ptr, val, ok := strings.Cut(s, "=")
	if !ok || !strings.HasPrefix(ptr, "/") {
		return fmt.Errorf("%q: want /pointer=tolerance, e.g. /score=1e-3", s)
	}
	v, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return fmt.Errorf("%q: %v", s, err)
	}
	f.m[ptr] = v
	return nil
}

// reportFlags are the flags pnp replay and pnp route report share.
type reportFlags struct {
	since        time.Duration
	last         int
	jsonOut      bool
	minAgreement float64
	tolerance    float64
	fieldTol     map[string]float64
	ignore       []string
}

func (r *reportFlags) register(fs *flagSet, lastDefault int) {
	fs.DurationVar(&r.since, "since", 0, "only what was recorded within this long, e.g. 1h (instead of --last)")
	fs.IntVar(&r.last, "last", lastDefault, "only the newest N records")
	fs.BoolVar(&r.jsonOut, "json", false, "print the report as JSON")
	fs.Float64Var(&r.minAgreement, "min-agreement", 0, "exit 1 when the agreement rate (0..1) is below this")
	fs.Float64Var(&r.tolerance, "tolerance", rollout.DefaultTolerance, "numbers this close (absolute or relative) compare equal; negative: exact")
	r.fieldTol = map[string]float64{}
	fs.Var(fieldTolerance{r.fieldTol}, "field-tolerance", "tolerance for the numbers at and below one JSON pointer, as /pointer=T (repeatable; overrides --tolerance there)")
	fs.Var(listFlag{&r.ignore}, "ignore", "JSON pointer of a field not compared, e.g. /timing (repeatable)")
}

func (r *reportFlags) check() error {
	if r.minAgreement < 0 || r.minAgreement > 1 {
		return fmt.Errorf("%w: --min-agreement %g: want 0..1", errUsage, r.minAgreement)
	}
	if r.since < 0 || r.last < 0 {
		return fmt.Errorf("%w: --since and --last must not be negative", errUsage)
	}
	return nil
}

func (r *reportFlags) options() rollout.CompareOptions {
	return rollout.CompareOptions{Tolerance: r.tolerance, FieldTolerance: r.fieldTol, Ignore: r.ignore}
}

func (r *reportFlags) window() (time.Time, int) {
	if r.since > 0 {
		return time.Now().Add(-r.since), 0
	}
	return time.Time{}, r.last
}

// printReport prints rep and fails when its agreement is under the
// minimum.
func (r *reportFlags) printReport(stdout io.Writer, title string, rep rollout.Report) error {
	if r.jsonOut {
		if err := writeJSON(stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%s: %d compared, %d agree: agreement %.2f%%\n", title, rep.Total, rep.Agree, 100*rep.Agreement)
		if rep.NotCompared > 0 {
			fmt.Fprintf(stdout, "%d not compared: an output stored by reference could not be read (the first: %s)\n", rep.NotCompared, safe(rep.NotComparedReason))
		}
		if len(rep.Fields) > 0 {
			fmt.Fprintln(stdout, "\nfields that differ most:")
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POINTER\tCOUNT\tEXAMPLE JOB IDS")
			for i, f := range rep.Fields {
				if i == 10 {
					fmt.Fprintf(tw, "...\t\t(%d more fields; --json lists all)\n", len(rep.Fields)-10)
					break
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\n", safe(f.Pointer), f.Count, safe(strings.Join(f.Examples, " ")))
			}
			tw.Flush()
		}
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tRUNS\tERRORS\tERROR RATE\tP50\tP99")
		for _, v := range rep.Versions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f%%\t%.1fms\t%.1fms\n", safe(v.Version), v.Runs, v.Errors, 100*v.ErrorRate, v.P50MS, v.P99MS)
		}
		tw.Flush()
	}
	if r.minAgreement > 0 && rep.Agreement < r.minAgreement {
		return fmt.Errorf("agreement %.4f is under --min-agreement %g", rep.Agreement, r.minAgreement)
	}
	return nil
}

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	alg, rest, err := splitAlgorithm("replay", args)
	if err != nil {
		return err
	}
	fs := newFlagSet("replay", "pnp replay ALGORITHM --version V [--last N | --since D] [--json] [--min-agreement X] [--tolerance T] [--ignore /ptr]", stdout)
	var (
		nf      natsFlags
		lf      logFlags
		rf      reportFlags
		version = fs.String("version", "", "the candidate version to run the recorded inputs on (required)")
		conc    = fs.Int("concurrency", 4, "requests in flight at once")
		timeout = fs.Duration("timeout", 30*time.Second, "time budget of each request")
	)
	nf.register(fs)
	lf.register(fs)
	rf.register(fs, 1000)
	if err := fs.parse(rest); err != nil {
		return err
	}
	if *version == "" {
		return fmt.Errorf("%w: --version is required", errUsage)
	}
	if err := rf.check(); err != nil {
		return err
	}
	nc, js, err := openJetStream(&nf, &lf, stderr, "pnp replay")
	if err != nil {
		return err
	}
	defer nc.Close()
	since, last := rf.window()
	cs, err := rollout.Replay(ctx, nc, js, rollout.ReplayConfig{Algorithm: alg, Version: *version, Since: since, Last: last,
		Compare: rf.options(), Concurrency: *conc, Timeout: *timeout})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no %s stream: jobs are recorded by controllers with --history-rate above 0 once it is provisioned (pnp provision)", rollout.HistoryStream)
	}
	if err != nil {
		return err
	}
	if len(cs) == 0 {
		// Nothing to compare is not a pass: a rollout gate must not
		// read it as 100 % agreement.
		return fmt.Errorf("no recorded job of %s in the window: controllers record a share of succeeded jobs in %s "+
			"(--history-rate, default %g; env PNP_HISTORY_RATE): run jobs of %s first, raise --history-rate, or widen --since/--last",
			safe(alg), rollout.HistoryStream, rollout.DefaultHistoryRate, safe(alg))
	}
	return rf.printReport(stdout, fmt.Sprintf("replay of %s on %s", safe(alg), safe(*version)), rollout.Summarize(alg, cs))
}

func cmdRouteReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	alg, rest, err := splitAlgorithm("route report", args)
	if err != nil {
		return err
	}
	fs := newFlagSet("route report", "pnp route report ALGORITHM [--last N | --since D] [--json] [--min-agreement X] [--tolerance T] [--ignore /ptr]", stdout)
	var (
		nf natsFlags
		lf logFlags
		rf reportFlags
	)
	nf.register(fs)
	lf.register(fs)
	rf.register(fs, 10000)
	if err := fs.parse(rest); err != nil {
		return err
	}
	if err := rf.check(); err != nil {
		return err
	}
	nc, js, err := openJetStream(&nf, &lf, stderr, "pnp route")
	if err != nil {
		return err
	}
	defer nc.Close()
	since, last := rf.window()
	cs, err := rollout.ReadComparisons(ctx, js, alg, since, last)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no %s stream yet: a controller provisions it (or pnp provision)", rollout.CompareStream)
	}
	if err != nil {
		return err
	}
	// Compare again with this command's tolerance and ignore list: the
	// stored verdict used the controller's.
	if rf.tolerance != rollout.DefaultTolerance || len(rf.ignore) > 0 || len(rf.fieldTol) > 0 {
		for i := range cs {
			cs[i] = cs[i].Recompare(rf.options())
		}
	}
	if len(cs) == 0 {
		fmt.Fprintf(stderr, "no comparison of %s stored in the window: set a shadow with pnp route set %s --stable V --shadow V\n", safe(alg), safe(alg))
	}
	return rf.printReport(stdout, fmt.Sprintf("shadow comparisons of %s", safe(alg)), rollout.Summarize(alg, cs))
}

// registerShadowFlags registers the flags of shadow runs, shared by pnp
// controller (jobs) and pnp gateway (runs): --shadow-concurrency into
// concurrency, and how outputs are compared into compare.
func registerShadowFlags(fs *flagSet, concurrency *int, compare *rollout.CompareOptions, past string) {
	fs.IntVar(concurrency, "shadow-concurrency", rollout.DefaultShadowConcurrency, "shadow requests in flight at most when a route names a shadow version; "+past)
	compare.Tolerance = rollout.DefaultTolerance
	fs.Float64Var(&compare.Tolerance, "shadow-tolerance", rollout.DefaultTolerance, "numbers of a shadow's output this close to the stable version's (absolute or relative) compare equal; negative: exact")
	compare.FieldTolerance = map[string]float64{}
	fs.Var(fieldTolerance{compare.FieldTolerance}, "shadow-field-tolerance", "tolerance for the numbers at and below one JSON pointer of a shadow's output, as /pointer=T (repeatable; overrides --shadow-tolerance there)")
	fs.Var(listFlag{&compare.Ignore}, "shadow-ignore", "JSON pointer of an output field the shadow comparison leaves out, e.g. /timing (repeatable)")
}

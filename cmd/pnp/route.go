package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/rollout"
)

const routeUsage = `usage: pnp route set|show|promote|clear|report ALGORITHM [flags]
  set ALGO --stable V [--canary V --percent N] [--shadow V]
             plain run.ALGO traffic reaches only V; --percent of jobs go to the canary;
             every job also runs on the shadow, compared, never returned
  show ALGO  print the route (--json for the record)
  promote ALGO
             the canary (else the shadow) becomes the stable version
  clear ALGO every live version serves run.ALGO again
  report ALGO
             summarize the stored shadow comparisons: agreement, the fields that
             differ most, errors and p50/p99 per version`

// splitAlgorithm takes the algorithm argument that follows a subcommand.
// A help flag instead passes through, for the flag set to print the help.
func splitAlgorithm(cmd string, args []string) (string, []string, error) {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		return "", args, nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, fmt.Errorf("%w: %s needs an algorithm name first, e.g. pnp %s meme_classifier", errUsage, cmd, cmd)
	}
	if !discovery.ValidAlgorithmName(args[0]) {
		return "", nil, fmt.Errorf("%w: %q is not an algorithm name", errUsage, args[0])
	}
	return args[0], args[1:], nil
}

func cmdRoute(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stdout, routeUsage)
		switch {
		case len(args) == 0:
			return fmt.Errorf("%w: missing subcommand", errUsage)
		case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
			return nil
		default:
			return fmt.Errorf("%w: want a subcommand (set, show, promote, clear or report) before %s", errUsage, args[0])
		}
	}
	sub := args[0]
	switch sub {
	case "set", "show", "promote", "clear":
	case "report":
		return cmdRouteReport(ctx, args[1:], stdout, stderr)
	default:
		return fmt.Errorf("%w: unknown subcommand %q (want set, show, promote, clear or report)", errUsage, sub)
	}
	alg, rest, err := splitAlgorithm("route "+sub, args[1:])
	if err != nil {
		return err
	}
	fs := newFlagSet("route "+sub, "pnp route "+sub+" ALGORITHM [flags]", stdout)
	var nf natsFlags
	var lf logFlags
	nf.register(fs)
	lf.register(fs)
	var r rollout.Route
	jsonOut := false
	switch sub {
	case "set":
		fs.StringVar(&r.Stable, "stable", "", "the version that serves plain run.ALGO traffic (required)")
		fs.StringVar(&r.Canary, "canary", "", "version that receives --percent of jobs")
		fs.Float64Var(&r.Percent, "percent", 0, "share of jobs sent to the canary, 0..100")
		fs.StringVar(&r.Shadow, "shadow", "", "version that also runs every job's input, off the critical path, for comparison")
	case "show":
		fs.BoolVar(&jsonOut, "json", false, "print the route record as JSON")
	}
	if err := fs.parse(rest); err != nil {
		return err
	}
	if sub == "set" {
		switch {
		case r.Stable == "":
			return fmt.Errorf("%w: --stable is required", errUsage)
		case r.Canary != "" && r.Percent <= 0:
			return fmt.Errorf("%w: --canary needs --percent between 0 and 100", errUsage)
		case r.Canary == "" && r.Percent != 0:
			return fmt.Errorf("%w: --percent needs --canary", errUsage)
		}
	}
	nc, js, err := openJetStream(&nf, &lf, stderr, "pnp route")
	if err != nil {
		return err
	}
	defer nc.Close()
	var st *rollout.Store
	if sub == "set" {
		st, err = rollout.Provision(ctx, js, rollout.Config{})
	} else {
		st, err = rollout.Open(ctx, js, rollout.Config{})
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("%s has no route (no routes bucket on %s yet)", alg, nf.server)
	}
	if err != nil {
		return err
	}
	by := who()
	switch sub {
	case "set":
		r.Algorithm, r.UpdatedBy = alg, by
		if err := st.Set(ctx, r); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		warnNotLive(ctx, js, stderr, r)
		fmt.Fprintf(stdout, "route %s: %s\n", alg, describeRoute(r))
	case "show":
		r, err := st.Get(ctx, alg)
		if errors.Is(err, rollout.ErrNoRoute) {
			return fmt.Errorf("%s has no route: every live version serves %s", alg, discovery.RequestSubject(alg))
		}
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSON(stdout, r)
		}
		fmt.Fprintf(stdout, "route %s: %s (updated %s by %s)\n", safe(alg), describeRoute(r), r.UpdatedAt.Format("2006-01-02 15:04:05Z07:00"), safe(r.UpdatedBy))
	case "promote":
		r, err := st.Promote(ctx, alg, by)
		if errors.Is(err, rollout.ErrNoRoute) {
			return fmt.Errorf("%s has no route to promote", alg)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "route %s: %s\n", alg, describeRoute(r))
	case "clear":
		if err := st.Clear(ctx, alg); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "route %s cleared: every live version serves %s\n", alg, discovery.RequestSubject(alg))
	}
	return nil
}

// who names the operator in route records.
func who() string {
	u := os.Getenv("USER")
	h, _ := os.Hostname()
	if u == "" {
		return h
	}
	return u + "@" + h
}

func describeRoute(r rollout.Route) string {
	s := "stable " + safe(r.Stable)
	if r.Canary != "" {
		s += fmt.Sprintf(", canary %s at %g%% of jobs", safe(r.Canary), r.Percent)
	}
	if r.Shadow != "" {
		s += ", shadow " + safe(r.Shadow)
	}
	return s
}

// warnNotLive says which versions a new route names that have no live
// instance: the route is stored anyway (the version may be starting).
func warnNotLive(ctx context.Context, js jetstream.JetStream, stderr io.Writer, r rollout.Route) {
	reg, err := discovery.Open(ctx, js, discovery.Config{})
	if err != nil {
		return
	}
	regs, err := reg.Lookup(ctx, r.Algorithm)
	if err != nil {
		return
	}
	for _, v := range r.NotLive(regs) {
		fmt.Fprintf(stderr, "warning: %s %s has no live instance; until one starts, its share goes to any live version\n", r.Algorithm, v)
	}
}

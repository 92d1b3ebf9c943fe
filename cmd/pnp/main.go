// Command pnp runs and inspects pnpworker: an all-in-one local system (up),
// runners, and discovery tools. Every subcommand has --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/pnpworker/pnpworker/internal/termsafe"
)

// command is one subcommand: its name, a one-line summary, and its entry.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"up", "run the whole system locally: embedded NATS with JetStream, runners for every built-in algorithm and a controller", cmdUp},
		{"runner", "serve built-in algorithms on an existing NATS", cmdRunner},
		{"algorithms", "list the algorithms registered in discovery (declare NAME accepts its jobs before a runner starts)", cmdAlgorithms},
		{"discovery", "provision, list or watch the discovery bucket (provision|ls|watch)", cmdDiscovery},
		{"register", "keep a registration record alive for a runner not built with pnpworker (deleted on exit)", cmdRegister},
		{"provision", "create or update every stream and bucket once, then exit (for deployments with --no-provision)", cmdProvision},
		{"route", "route plain traffic and jobs between versions of an algorithm: stable, canary, shadow (set|show|promote|clear|report)", cmdRoute},
		{"replay", "re-run recorded job inputs on a candidate version and report how its outputs differ", cmdReplay},
		{"controller", "run a controller: take jobs from JOBS to runners, store results, retry, dead-letter", cmdController},
		{"submit", "submit a job and print its id (--wait prints its result)", cmdSubmit},
		{"result", "print the result of a job (-o FILE writes its output, also one stored by reference)", cmdResult},
		{"cancel", "cancel jobs: a waiting job never runs, a running one is stopped; status cancelled", cmdCancel},
		{"put", "upload files to the object store (bucket inputs) and print their obj:// references", cmdPut},
		{"get", "download an object (obj://bucket/name) to a file or stdout", cmdGet},
		{"jobs", "show waiting, in-flight and dead jobs per algorithm; jobs ls lists jobs by result, filtered and paged; jobs purge ALGORITHM drops its waiting jobs", cmdJobs},
		{"dead", "list or replay dead letters (ls|replay)", cmdDead},
		{"schedule", "add, list or remove periodic jobs (add|ls|rm)", cmdSchedule},
		{"gateway", "serve the HTTP API, the OpenAPI document and the dashboard over an existing NATS", cmdGateway},
		{"chaos", "run the fault scenarios (process kills, NATS restarts, cluster failover, overload, soak) and count lost jobs", cmdChaos},
		{"bench", "measure the runner against a hand-written responder and print ratios", cmdBench},
		{"version", "print the version", cmdVersion},
	}
}

// errUsage marks errors caused by the command line; main prints the usage
// hint and exits 2 for them.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "pnp %s: %s\nrun 'pnp %s --help' for usage\n", c.name, termsafe.Lines(err.Error()), c.name)
			return 2
		default:
			// Errors quote what NATS sent (a runner's message, a key):
			// escape it like every other output.
			fmt.Fprintf(stderr, "pnp %s: %s\n", c.name, termsafe.Lines(err.Error()))
			return 1
		}
	}
	fmt.Fprintf(stderr, "pnp: unknown command %q\nrun 'pnp --help' for the list of commands\n", args[0])
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pnp — plug & play algorithms over NATS")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: pnp <command> [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run 'pnp <command> --help' for its flags")
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func cmdVersion(_ context.Context, args []string, stdout, _ io.Writer) error {
	if err := newFlagSet("version", "pnp version", stdout).parse(args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "pnp", version)
	return nil
}

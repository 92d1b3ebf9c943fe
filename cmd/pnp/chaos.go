package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pnpworker/pnpworker/harness/chaos"
)

// cmdChaos runs the fault scenarios of docs/RELIABILITY.md against child
// processes of this same binary, on loopback. "pnp chaos child <role>" is
// how the scenarios start those children.
func cmdChaos(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "child" {
		return cmdChaosChild(ctx, args[1:], stdout, stderr)
	}
	fs := newFlagSet("chaos", "pnp chaos [--scenario all|"+strings.Join(chaos.Scenarios, "|")+"] [--duration 30s] [flags]", stdout)
	var (
		scenario    = fs.String("scenario", "all", "comma-separated scenarios, or all: "+strings.Join(chaos.Scenarios, ", "))
		duration    = fs.Duration("duration", 30*time.Second, "how long jobs are submitted and faults injected, per scenario")
		rate        = fs.Int("rate", 50, "jobs submitted per second")
		runners     = fs.Int("runners", 3, "runner processes")
		controllers = fs.Int("controllers", 2, "controller processes")
		sleep       = fs.Int("sleep-ms", 20, "how long an ordinary job runs, in milliseconds")
		seed        = fs.Uint64("seed", 1, "seed of the fault schedule")
		settle      = fs.Duration("settle", 90*time.Second, "how long to wait for outcomes after the faults end")
		outage      = fs.Duration("outage", time.Second, "how long NATS stays down in nats-kill")
		work        = fs.String("work", "", "directory for stores and process logs; default a new temporary directory, removed when every scenario passed")
		jsonOut     = fs.Bool("json", false, "print the reports as JSON")
	)
	if err := fs.parse(args); err != nil {
		return err
	}
	names := chaos.Scenarios
	if *scenario != "all" {
		names = strings.Split(*scenario, ",")
		for i, n := range names {
			names[i] = strings.TrimSpace(n)
			if !slices.Contains(chaos.Scenarios, names[i]) {
				return fmt.Errorf("%w: unknown scenario %q (want all or some of %s)", errUsage, n, strings.Join(chaos.Scenarios, ", "))
			}
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	dir, keep := *work, *work != ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pnp-chaos-"); err != nil {
			return err
		}
	}
	cfg := chaos.Config{Bin: bin, WorkDir: dir, Duration: *duration, Rate: *rate, Runners: *runners,
		Controllers: *controllers, SleepMS: *sleep, Seed: *seed, Settle: *settle, Outage: *outage, Progress: stderr}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var failed []string
	var reports []*chaos.Report
	for _, name := range names {
		rep, err := chaos.Run(ctx, name, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w (logs in %s)", name, err, dir)
		}
		reports = append(reports, rep)
		if !*jsonOut {
			fmt.Fprintln(stdout, rep.Summary())
			for _, f := range rep.Faults {
				line := fmt.Sprintf("  %9s  %s %s", f.At, f.What, f.Target)
				if f.Outage > 0 {
					line += fmt.Sprintf("; down %s", f.Outage)
				}
				if f.Recovery > 0 {
					line += fmt.Sprintf("; next completion after %s", f.Recovery)
				}
				if f.Dropped > 0 {
					line += fmt.Sprintf("; left discovery after %s", f.Dropped)
				}
				fmt.Fprintln(stdout, line)
			}
			if len(rep.Extra) > 0 {
				b, _ := json.Marshal(rep.Extra)
				fmt.Fprintf(stdout, "  %s\n", b)
			}
		}
		if !rep.OK() {
			failed = append(failed, name)
		}
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("jobs lost, duplicated or with the wrong outcome in %s (logs in %s)", strings.Join(failed, ", "), dir)
	}
	if !keep {
		_ = os.RemoveAll(dir)
	}
	return nil
}

func cmdChaosChild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: pnp chaos child runner|nats [flags]", errUsage)
	}
	role, args := args[0], args[1:]
	fs := newFlagSet("chaos child "+role, "pnp chaos child "+role+" [flags]", stdout)
	var lf logFlags
	lf.register(fs)
	switch role {
	case "runner":
		var c chaos.RunnerChild
		fs.StringVar(&c.Servers, "server", env("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s)")
		fs.StringVar(&c.ExecDir, "exec-dir", "", "directory of the execution logs")
		fs.IntVar(&c.MaxConcurrency, "max-concurrency", 4, "requests run at once")
		fs.IntVar(&c.MaxPending, "max-pending", 64, "requests waiting for a slot before 503")
		fs.DurationVar(&c.Timeout, "timeout", 2*time.Second, "per-request time budget")
		fs.DurationVar(&c.DrainTimeout, "drain-timeout", 3*time.Second, "drain timeout on SIGTERM")
		if err := fs.parse(args); err != nil {
			return err
		}
		if c.ExecDir == "" {
			return fmt.Errorf("%w: --exec-dir is required", errUsage)
		}
		log, err := lf.logger(stderr)
		if err != nil {
			return err
		}
		c.Logger = log
		return chaos.RunRunner(ctx, c)
	case "nats":
		var c chaos.NATSChild
		fs.IntVar(&c.Port, "port", 4222, "client port on 127.0.0.1")
		fs.StringVar(&c.StoreDir, "store", "", "JetStream store directory")
		fs.BoolVar(&c.SyncAlways, "sync-always", false, "fsync every write before acknowledging it")
		fs.StringVar(&c.Name, "name", "chaos", "server name, unique in a cluster")
		fs.IntVar(&c.ClusterPort, "cluster-port", 0, "cluster port on 127.0.0.1; 0: no cluster")
		fs.StringVar(&c.Routes, "routes", "", "comma-separated route URLs of the cluster's members")
		if err := fs.parse(args); err != nil {
			return err
		}
		if c.StoreDir == "" {
			return fmt.Errorf("%w: --store is required", errUsage)
		}
		return chaos.RunNATS(ctx, c)
	}
	return fmt.Errorf("%w: unknown role %q", errUsage, role)
}

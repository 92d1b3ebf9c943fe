package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pnpworker/pnpworker/jobs"
)

func cmdSchedule(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stdout, "usage: pnp schedule add|ls|rm [flags]")
		fmt.Fprintln(stdout, "  add <name> --every D | --cron EXPR <algorithm> <json | @file | ->  store a periodic job (replaces one of that name)")
		fmt.Fprintln(stdout, "  ls                       list the schedules with their next run")
		fmt.Fprintln(stdout, "  rm <name>                remove a schedule; runs already started go on")
		if len(args) == 0 {
			return fmt.Errorf("%w: missing subcommand", errUsage)
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := newFlagSet("schedule "+sub, "pnp schedule "+sub+" [flags]", stdout)
	var (
		nf      natsFlags
		lf      logFlags
		sch     jobs.Schedule
		jsonOut bool
	)
	nf.register(fs)
	lf.register(fs)
	switch sub {
	case "add":
		fs.usage = "pnp schedule add [flags] <name> <algorithm> <json | @file | ->"
		fs.DurationVar(&sch.Every, "every", 0, "run every this long (whole seconds, at least 1s)")
		fs.StringVar(&sch.Cron, "cron", "", "run at the times of this cron expression, in UTC: six fields, seconds first ('0 30 2 * * *' is 02:30:00 daily), or @hourly, @daily, @weekly, @monthly, @yearly")
		fs.DurationVar(&sch.Timeout, "timeout", 0, "time budget of each run; can only shorten the algorithm's timeout")
		fs.StringVar((*string)(&sch.Priority), "priority", "", "priority of each run: high, normal or low (see pnp submit --priority)")
	case "ls":
		fs.BoolVar(&jsonOut, "json", false, "print as JSON")
	case "rm":
		fs.usage = "pnp schedule rm [flags] <name>"
	default:
		return fmt.Errorf("%w: unknown subcommand %q (want add, ls or rm)", errUsage, sub)
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	switch {
	case sub == "add" && len(pos) != 3:
		return fmt.Errorf("%w: want <name> <algorithm> <json | @file | ->, got %d arguments", errUsage, len(pos))
	case sub == "ls" && len(pos) != 0:
		return fmt.Errorf("%w: ls takes no arguments", errUsage)
	case sub == "rm" && len(pos) != 1:
		return fmt.Errorf("%w: want one schedule name", errUsage)
	}
	if sub == "add" {
		sch.Name, sch.Algorithm = pos[0], pos[1]
		if sch.Input, err = readInput(pos[2]); err != nil {
			return err
		}
		if err := sch.Validate(); err != nil {
			return fmt.Errorf("%w: %v", errUsage, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, sub == "add")
	if err != nil {
		return err
	}
	defer nc.Close()
	switch sub {
	case "add":
		if err := store.AddSchedule(ctx, sch); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schedule %s stored: %s runs %s\n", sch.Name, sch.Algorithm, sch.Spec())
		return nil
	case "rm":
		if err := store.RemoveSchedule(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "schedule %s removed\n", pos[0])
		return nil
	}
	list, err := store.ListSchedules(ctx)
	if err != nil {
		return err
	}
	if jsonOut {
		return writeJSON(stdout, list)
	}
	if len(list) == 0 {
		fmt.Fprintln(stderr, "no schedules")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tALGORITHM\tSCHEDULE\tNEXT RUN\tINPUT")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", safe(s.Name), safe(s.Algorithm), safe(s.Spec()),
			s.NextRun.Local().Format(time.DateTime), safe(shortJSON(s.Input, 60)))
	}
	return tw.Flush()
}

// shortJSON is b compacted and cut to n runes.
func shortJSON(b json.RawMessage, n int) string {
	r := []rune(strings.Join(strings.Fields(string(b)), " "))
	if len(r) > n {
		r = append(r[:n-3], []rune("...")...)
	}
	return string(r)
}

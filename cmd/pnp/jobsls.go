package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pnpworker/pnpworker/jobs"
)

// cmdJobsLs is `pnp jobs ls`: the jobs that have a result record, most
// recently written first, filtered like GET /v1/jobs.
func cmdJobsLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("jobs ls", "pnp jobs ls [--algorithm NAME] [--status STATUS] [--since TIME|DURATION] [--limit N] [--cursor C | --all] [--json]", stdout)
	var (
		nf        natsFlags
		lf        logFlags
		opts      jobs.ListOptions
		status    = fs.String("status", "", "only records with this status: "+strings.Join(statusNames(), ", "))
		since     = fs.String("since", "", "only jobs submitted at or after this RFC 3339 time, or this long ago (a duration such as 90m or 24h)")
		all       = fs.Bool("all", false, "follow the pages to the end of the listing instead of printing one")
		jsonOut   = fs.Bool("json", false, "print the page as JSON, as GET /v1/jobs answers it")
		limitFlag = fs.Int("limit", jobs.DefaultListLimit, fmt.Sprintf("jobs per page, 1 to %d", jobs.MaxListLimit))
	)
	nf.register(fs)
	lf.register(fs)
	fs.StringVar(&opts.Algorithm, "algorithm", "", "only this algorithm's jobs")
	fs.StringVar(&opts.Cursor, "cursor", "", "continue a listing: the cursor the previous page printed")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: ls takes no arguments, got %q", errUsage, pos[0])
	}
	opts.Status, opts.Limit = jobs.Status(*status), *limitFlag
	var errs []error
	if *limitFlag == 0 {
		errs = append(errs, jobs.ZeroLimitError())
	}
	if *since != "" {
		if opts.Since, err = jobs.ParseSince(*since, time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	if *all && opts.Cursor != "" {
		errs = append(errs, &jobs.OptionError{Option: "all", Message: "follows the pages from the first; give it or --cursor, not both"})
	}
	if err := errors.Join(append(errs, opts.Validate())...); err != nil {
		return fmt.Errorf("%w: %s", errUsage, flagMessages(err))
	}
	nc, store, err := openStore(ctx, &nf, &lf, stderr, false)
	if err != nil {
		return err
	}
	defer nc.Close()
	page, err := store.ListJobs(ctx, opts)
	for *all && err == nil && page.Next != "" {
		opts.Cursor = page.Next
		var more jobs.JobPage
		if more, err = store.ListJobs(ctx, opts); err == nil {
			page.Jobs, page.Next, page.Scanned = append(page.Jobs, more.Jobs...), more.Next, page.Scanned+more.Scanned
		}
	}
	if err != nil {
		return err
	}
	if *jsonOut {
		return writeJSON(stdout, page)
	}
	if len(page.Jobs) == 0 {
		fmt.Fprintln(stderr, "no jobs")
	} else if err := printJobTable(stdout, page.Jobs); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(stderr, "more: pnp jobs ls --cursor %s (with the same filters), or --all\n", page.Next)
	}
	return nil
}

func printJobTable(stdout io.Writer, list []jobs.Result) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tALGORITHM\tSTATUS\tATTEMPTS\tVERSION\tSUBMITTED\tDURATION\tERROR")
	for _, r := range list {
		dur, errText := "-", ""
		if r.DurationMS != nil {
			dur = (time.Duration(*r.DurationMS * float64(time.Millisecond))).Round(time.Millisecond).String()
		}
		if r.Progress != nil {
			// A running job: how far it got, in the last column.
			errText = progressText(r.Progress)
		}
		if r.Error != nil {
			errText = fmt.Sprintf("%d %s", r.Error.Code, r.Error.Message)
			if m := []rune(errText); len(m) > 60 {
				errText = string(m[:57]) + "..."
			}
		}
		version := r.Version
		if version == "" {
			version = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", safe(r.JobID), safe(r.Algorithm), r.Status, r.Attempts, safe(version),
			r.SubmittedAt.Local().Format(time.DateTime), dur, safe(errText))
	}
	return tw.Flush()
}

// progressText shows a running job's progress: "40% resizing tiles".
func progressText(p *jobs.Progress) string {
	text := strconv.FormatFloat(p.Fraction*100, 'f', 0, 64) + "%"
	if p.Message != "" {
		text += " " + p.Message
	}
	return text
}

func statusNames() []string {
	out := make([]string, len(jobs.Statuses))
	for i, s := range jobs.Statuses {
		out[i] = string(s)
	}
	return out
}

// flagMessages words the errors of a listing's options as flag errors:
// "--status: ...; --limit: ...".
func flagMessages(err error) string {
	var msgs []string
	for _, oe := range jobs.OptionErrors(err) {
		msgs = append(msgs, "--"+oe.Error())
	}
	if len(msgs) == 0 {
		return err.Error()
	}
	return strings.Join(msgs, "; ")
}

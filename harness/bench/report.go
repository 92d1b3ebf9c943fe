package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteText prints the report for people: the setup, every round, the
// medians and the ratios against their targets.
func (r Report) WriteText(w io.Writer) error {
	s := r.Setup
	check := "validated on both sides"
	if !s.OutputCheck {
		check = "not validated (runner.WithoutOutputValidation; handwritten skips it too)"
	}
	fmt.Fprintf(w, "pnp bench: %s on %s\n", s.Subject, s.Server)
	order := "handwritten, runner, ..."
	if s.Metrics {
		order = "handwritten, runner, runner+metrics, then handwritten, runner+metrics, runner, ..."
	}
	if s.Echo {
		order += "; echo last in every round"
	}
	fmt.Fprintf(w, "  %d rounds x %d requests per responder (+%d warm-up each), %d in flight, order %s\n",
		s.Rounds, s.Requests, s.Warmup, s.InFlight, order)
	fmt.Fprintf(w, "  concurrency %d on both: runner MaxConcurrency, handwritten worker goroutines; outputs %s\n", s.Concurrency, check)
	fmt.Fprintf(w, "  payloads %d-%d bytes; %s %s/%s, GOMAXPROCS %d, %d CPUs; load, responder and server share this process\n\n",
		s.PayloadBytes[0], s.PayloadBytes[1], s.GoVersion, s.GOOS, s.GOARCH, s.GOMAXPROCS, s.NumCPU)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tresponder\treq/s\tp50\tp99\tmax\tcpu/req\terrors\t")
	for _, rd := range r.Rounds {
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%d\t\n", rd.Round, rd.Responder, rd.PerSecond,
			dur(rd.P50), dur(rd.P99), dur(rd.Max), dur(rd.CPUPerRequest), rd.Errors)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)

	h, rn := r.Handwritten, r.Runner
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "median\thandwritten\trunner\trunner/handwritten\ttarget\t\t")
	fmt.Fprintf(tw, "req/s\t%.0f\t%.0f\t%.3f\t>= %.2f\t%s\t\n", h.PerSecond, rn.PerSecond, r.ThroughputRatio,
		TargetThroughputRatio, verdict(r.ThroughputRatio >= TargetThroughputRatio))
	fmt.Fprintf(tw, "p50\t%s\t%s\t%.3f\t<= %.2f\t%s\t\n", dur(h.P50), dur(rn.P50), r.P50Ratio,
		TargetP50Ratio, verdict(r.P50Ratio > 0 && r.P50Ratio <= TargetP50Ratio))
	fmt.Fprintf(tw, "p99\t%s\t%s\t%.3f\t\t\t\n", dur(h.P99), dur(rn.P99), r.P99Ratio)
	if r.CPURatio > 0 {
		fmt.Fprintf(tw, "cpu/req\t%s\t%s\t%.3f\t\t\t\n", dur(h.CPUPerRequest), dur(rn.CPUPerRequest), r.CPURatio)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if m := r.RunnerMetrics; m != nil {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "median\trunner\trunner+metrics\twith/without\ttarget\t\t")
		fmt.Fprintf(tw, "req/s\t%.0f\t%.0f\t%.3f\t>= %.2f\t%s\t\n", rn.PerSecond, m.PerSecond, r.MetricsThroughputRatio,
			TargetMetricsRatio, verdict(r.MetricsThroughputRatio >= TargetMetricsRatio))
		fmt.Fprintf(tw, "req/s, paired by round\t\t\t%.3f\t\t\t\n", r.MetricsPairedRatio)
		fmt.Fprintf(tw, "p50\t%s\t%s\t%.3f\t\t\t\n", dur(rn.P50), dur(m.P50), r.MetricsP50Ratio)
		fmt.Fprintf(tw, "p99\t%s\t%s\t%.3f\t\t\t\n", dur(rn.P99), dur(m.P99), ratio(float64(m.P99), float64(rn.P99)))
		if rn.CPUPerRequest > 0 {
			fmt.Fprintf(tw, "cpu/req\t%s\t%s\t%.3f\t\t\t\n", dur(rn.CPUPerRequest), dur(m.CPUPerRequest), ratio(float64(m.CPUPerRequest), float64(rn.CPUPerRequest)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if e := r.Echo; e != nil {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "median\techo\trunner\trunner/echo\ttarget\t\t")
		fmt.Fprintf(tw, "req/s\t%.0f\t%.0f\t%.3f\t>= %.2f\t%s\t\n", e.PerSecond, rn.PerSecond, r.EchoThroughputRatio,
			TargetEchoRatio, verdict(r.EchoThroughputRatio >= TargetEchoRatio))
		fmt.Fprintf(tw, "p50\t%s\t%s\t%.3f\t\t\t\n", dur(e.P50), dur(rn.P50), r.EchoP50Ratio)
		fmt.Fprintf(tw, "p99\t%s\t%s\t%.3f\t\t\t\n", dur(e.P99), dur(rn.P99), ratio(float64(rn.P99), float64(e.P99)))
		if r.EchoCPURatio > 0 {
			fmt.Fprintf(tw, "cpu/req\t%s\t%s\t%.3f\t\t\t\n", dur(e.CPUPerRequest), dur(rn.CPUPerRequest), r.EchoCPURatio)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if r.MeetsTargets {
		_, err := fmt.Fprintln(w, "\nthe runner meets every target")
		return err
	}
	_, err := fmt.Fprintln(w, "\nthe runner MISSES a target")
	return err
}

// WriteJSON prints the report as one indented JSON document; durations are
// integer nanoseconds.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISS"
}

// dur prints d in microseconds with one decimal below a millisecond, in
// milliseconds with three decimals from there.
func dur(d time.Duration) string {
	if d >= time.Millisecond {
		return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) + "ms"
	}
	return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) + "µs"
}

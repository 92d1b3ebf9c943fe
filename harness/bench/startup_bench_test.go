package bench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// startupBefore names a pnp binary built from an earlier commit, measured
// as a third target next to the current one and the floor, in the same
// run: go test -run '^$' -bench Startup ./harness/bench/ -startup.before /tmp/pnp-main
var startupBefore = flag.String("startup.before", "", "a pnp binary of an earlier commit that BenchmarkStartup and BenchmarkUpIdleRSS also measure")

// startupAlgorithm is the built-in algorithm the start-up benchmarks
// serve and ask: its first reply says the process serves.
const startupAlgorithm = "language_detection"

// startupInput is a valid input of startupAlgorithm.
var startupInput = []byte(`{"text":"Le renard brun saute par-dessus le chien paresseux"}`)

// requestEvery paces the requests of a client waiting for a first reply:
// an unanswered request on a subject nobody serves comes back at once as
// "no responders", so the wait is measured to about this.
const requestEvery = 500 * time.Microsecond

// startTarget is one kind of process a start-up benchmark starts, again
// and again.
type startTarget struct {
	name string
	// args builds the command line of one start.
	args func(round int) []string
}

// BenchmarkStartup measures how long pnp runner takes from exec to its
// first reply on run.<algorithm> against an already-running nats-server
// whose buckets pnp provision made (a deployment's runner starting), next
// to the floor: a hand-written nats.go program (testdata/floor_responder)
// that connects and subscribes the same subject in the same queue group.
// Every round starts each target once, in turn, and stops it before the
// next; a client sends a request every 0.5 ms from just before the exec
// until one is answered. b.N is the number of rounds; run it with
// -benchtime 15x or more:
//
//	go test -run '^$' -bench Startup -benchtime 15x ./harness/bench/
//
// Add -startup.before BIN to also measure another pnp binary (an
// earlier commit's) in the same rounds.
func BenchmarkStartup(b *testing.B) {
	if b.N == 1 {
		return // the framework's probe run; the real one has b.N rounds
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := b.TempDir()
	natsBin := buildBinary(b, dir, "nats-server", "github.com/nats-io/nats-server/v2")
	pnpBin := buildBinary(b, dir, "pnp", "github.com/pnpworker/pnpworker/cmd/pnp")
	floorBin := buildBinary(b, dir, "floor_responder", "github.com/pnpworker/pnpworker/harness/bench/testdata/floor_responder")
	port := freePort(b)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	startProcess(b, ctx, "", nil, natsBin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", filepath.Join(dir, "js"))
	nc := connectWhenUp(b, url)
	// As after pnp provision (or a controller, or pnp up) ran: every
	// stream and bucket, this algorithm's outputs bucket included.
	if out, err := exec.CommandContext(ctx, pnpBin, "provision", "--server", url, "--output-algorithms", startupAlgorithm, "--log-level", "warn").CombinedOutput(); err != nil {
		b.Fatalf("pnp provision: %v\n%s", err, out)
	}
	subject := protocol.SubjectPrefix + startupAlgorithm
	runnerArgs := func(bin string) func(int) []string {
		return func(int) []string {
			return []string{bin, "runner", "--server", url, "--algorithms", startupAlgorithm, "--log-level", "warn"}
		}
	}
	targets := []startTarget{
		{name: "floor", args: func(int) []string { return []string{floorBin, url, subject, "runners"} }},
		{name: "runner", args: runnerArgs(pnpBin)},
	}
	if *startupBefore != "" {
		targets = append(targets, startTarget{name: "before", args: runnerArgs(*startupBefore)})
	}
	times := map[string][]float64{}
	for round := range b.N {
		for _, t := range targets {
			d, err := timeFirstReply(ctx, nc, subject, t.args(round), nil)
			if err != nil {
				b.Fatalf("round %d, %s: %v", round+1, t.name, err)
			}
			times[t.name] = append(times[t.name], float64(d)/float64(time.Millisecond))
		}
	}
	report := []string{fmt.Sprintf("%d rounds; load average %s", b.N, loadAverage())}
	for _, t := range targets {
		ms := median(times[t.name])
		b.ReportMetric(ms, t.name+"-ms")
		report = append(report, fmt.Sprintf("%-7s median %6.1f ms  (%s)", t.name, ms, formatMS(times[t.name])))
	}
	floor := median(times["floor"])
	b.ReportMetric(ratio(median(times["runner"]), floor), "runner/floor")
	if *startupBefore != "" {
		b.ReportMetric(ratio(median(times["before"]), floor), "before/floor")
		b.ReportMetric(ratio(median(times["runner"]), median(times["before"])), "runner/before")
	}
	b.Log(strings.Join(report, "\n"))
}

// timeFirstReply starts the command args and returns how long it took
// from just before the exec to the first successful reply on subject; it
// then stops the process (SIGINT) and waits for it to exit.
func timeFirstReply(ctx context.Context, nc *nats.Conn, subject string, args []string, env []string) (time.Duration, error) {
	cmd, out, err := startCommand(ctx, args, env)
	if err != nil {
		return 0, err
	}
	start := cmd.started
	d, err := waitFirstReply(ctx, nc, subject, start, cmd.exited)
	if stopErr := cmd.stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	if err != nil {
		return 0, fmt.Errorf("%w\n%s", err, out.String())
	}
	return d, nil
}

// waitFirstReply sends a request on subject every requestEvery until one
// is answered without an error header, and returns the time from start to
// that answer. It gives up after a minute or when exited is closed.
func waitFirstReply(ctx context.Context, nc *nats.Conn, subject string, start time.Time, exited <-chan struct{}) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(requestEvery)
	defer tick.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := nc.RequestWithContext(rctx, subject, startupInput)
		rcancel()
		if err == nil {
			if rerr := protocol.ReplyError(m); rerr != nil {
				return 0, fmt.Errorf("first reply on %s: %w", subject, rerr)
			}
			return time.Since(start), nil
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return 0, fmt.Errorf("request %s: %w", subject, err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no reply on %s: %w", subject, ctx.Err())
		case <-exited:
			return 0, errors.New("the process exited before it answered")
		case <-tick.C:
		}
	}
}

// process is a started benchmark process.
type process struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{}
	err     error // of Wait, once exited is closed
}

// startCommand starts args (program first) with env added, its output
// collected in out.
func startCommand(ctx context.Context, args []string, env []string) (*process, *syncBuffer, error) {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 20 * time.Second
	p := &process{cmd: cmd, exited: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, out, fmt.Errorf("start %s: %w", args[0], err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	return p, out, nil
}

// stop interrupts the process and waits (up to 30 s) for it to exit.
func (p *process) stop() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited early: %v", p.cmd.Path, p.err)
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.exited:
		return nil
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within 30s of SIGINT", p.cmd.Path)
	}
}

// BenchmarkUpIdleRSS measures the resident memory of an idle pnp up: the
// process is started (default algorithms, gateway on a free loopback port,
// a fresh data directory), asked on run.<algorithm> until it answers, left
// idle for -startup.idle (default 20 s: an idle pnp up still polls and
// allocates, and its heap grows to the garbage collector's goal within
// about that), and then its VmRSS, VmHWM, RssAnon and RssFile are read
// from /proc/<pid>/status. The baseline, in the same rounds: the NATS
// server with JetStream embedded as pnp up embeds it, alone
// (testdata/embedded_server), read the same way once it accepts
// connections and the same idle time has passed. b.N is the number of
// starts of each; run it with -benchtime 3x or more:
//
//	go test -run '^$' -bench UpIdleRSS -benchtime 3x -timeout 30m ./harness/bench/
func BenchmarkUpIdleRSS(b *testing.B) {
	if b.N == 1 {
		return // the framework's probe run
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		b.Fatalf("needs /proc/<pid>/status: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := b.TempDir()
	pnpBin := buildBinary(b, dir, "pnp", "github.com/pnpworker/pnpworker/cmd/pnp")
	serverBin := buildBinary(b, dir, "embedded_server", "github.com/pnpworker/pnpworker/harness/bench/testdata/embedded_server")
	upArgs := func(bin string) func(round int, port int) []string {
		return func(round, port int) []string {
			return []string{bin, "up", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--http", "127.0.0.1:0",
				"--data", filepath.Join(dir, fmt.Sprintf("%s-%d", filepath.Base(bin), round)), "--log-level", "warn"}
		}
	}
	type target struct {
		name  string
		args  func(round, port int) []string
		serve bool // answers run.<algorithm>
	}
	targets := []target{
		{name: "server", args: func(round, port int) []string {
			return []string{serverBin, strconv.Itoa(port), filepath.Join(dir, fmt.Sprintf("server-%d", round))}
		}},
		{name: "up", args: upArgs(pnpBin), serve: true},
	}
	if *startupBefore != "" {
		targets = append(targets, target{name: "before", args: upArgs(*startupBefore), serve: true})
	}
	rss, hwm, anon, file := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	for round := range b.N {
		for _, t := range targets {
			port := freePort(b)
			p, out, err := startCommand(ctx, t.args(round, port), []string{"PNP_DATA=", "PNP_HTTP="})
			if err != nil {
				b.Fatal(err)
			}
			url := fmt.Sprintf("nats://127.0.0.1:%d", port)
			err = func() error {
				nc, err := connectBefore(ctx, url, p.exited)
				if err != nil {
					return err
				}
				defer nc.Close()
				if t.serve {
					if _, err := waitFirstReply(ctx, nc, protocol.SubjectPrefix+startupAlgorithm, p.started, p.exited); err != nil {
						return err
					}
				}
				nc.Close() // its own buffers are not the target's
				time.Sleep(*upIdle)
				mem, err := procMemory(p.cmd.Process.Pid)
				if err != nil {
					return err
				}
				rss[t.name] = append(rss[t.name], mem["VmRSS"])
				hwm[t.name] = append(hwm[t.name], mem["VmHWM"])
				anon[t.name] = append(anon[t.name], mem["RssAnon"])
				file[t.name] = append(file[t.name], mem["RssFile"])
				return nil
			}()
			if stopErr := p.stop(); err == nil {
				err = stopErr
			}
			if err != nil {
				b.Fatalf("round %d, %s: %v\n%s", round+1, t.name, err, out.String())
			}
		}
	}
	report := []string{fmt.Sprintf("%d starts each, idle %s; load average %s", b.N, *upIdle, loadAverage())}
	for _, t := range targets {
		r, h := median(rss[t.name]), median(hwm[t.name])
		b.ReportMetric(r, t.name+"-rss-MiB")
		b.ReportMetric(h, t.name+"-hwm-MiB")
		report = append(report, fmt.Sprintf("%-6s VmRSS median %5.1f MiB (%s)  VmHWM %5.1f  RssAnon %5.1f  RssFile %5.1f MiB",
			t.name, r, formatMS(rss[t.name]), h, median(anon[t.name]), median(file[t.name])))
	}
	b.ReportMetric(median(rss["up"])-median(rss["server"]), "up-minus-server-MiB")
	if *startupBefore != "" {
		b.ReportMetric(ratio(median(rss["up"]), median(rss["before"])), "up/before")
	}
	b.Log(strings.Join(report, "\n"))
}

// upIdle is how long BenchmarkUpIdleRSS lets a process idle before reading
// its memory.
var upIdle = flag.Duration("startup.idle", 20*time.Second, "how long BenchmarkUpIdleRSS lets each process idle before reading its memory")

// connectBefore connects to url, retrying every 10 ms for up to a minute,
// unless exited is closed first.
func connectBefore(ctx context.Context, url string, exited <-chan struct{}) (*nats.Conn, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			return nc, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", url, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-exited:
			return nil, errors.New("the process exited before it accepted connections")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// procMemoryKeys are the lines of /proc/<pid>/status procMemory reads.
var procMemoryKeys = []string{"VmRSS", "VmHWM", "RssAnon", "RssFile"}

// procMemory reads procMemoryKeys of pid, in MiB.
func procMemory(pid int) (map[string]float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || !slices.Contains(procMemoryKeys, key) {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		out[key] = kb / 1024
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, k := range procMemoryKeys {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("/proc/%d/status: no %s", pid, k)
		}
	}
	return out, nil
}

// loadAverage is the machine's 1, 5 and 15 minute load average, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// formatMS lists xs with one decimal.
func formatMS(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strings.Join(s, " ")
}

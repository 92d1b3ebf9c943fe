package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// session is one lifetime of one worker process.
type session struct {
	w     *Worker
	logp  atomic.Pointer[zerolog.Logger] // with pid, then algorithm names
	basep atomic.Pointer[zerolog.Logger] // with pid: for entries that name their algorithm
	cmd   *exec.Cmd
	stdin *os.File

	wmu sync.Mutex // guards wq
	wq  writeQueue // lines for stdin: written together

	mu      sync.Mutex
	pending map[string]*call
	dead    bool // the process can take no more requests

	nextID   atomic.Uint64
	hello    chan inbound  // the first hello, handed to lifetime
	exited   chan struct{} // closed once the process was reaped and its output read
	exitErr  error         // why it exited; read after exited is closed
	killOnce sync.Once
	logs     *logBudget // stderr lines and log messages
	tail     stderrTail // the last stderr lines, for a start error

	procMu sync.Mutex // held while the process is reaped or killed
	reaped bool       // its pid may belong to another process now
}

// call is a request sent to the process and not yet answered.
type call struct {
	ctx       context.Context // the request's, for its progress reports
	algorithm string
	job       string // the caller's job id, for the log
	batch     int    // number of items; 0 for a single request
	ch        chan result
}

type result struct {
	output  json.RawMessage
	outputs []itemResult
	err     error
}

// lifetime starts the process, waits for its hello, serves its algorithms
// with a runner until the process exits or ctx ends, and returns why it
// stopped. While the runner serves, sl shows it to the scaler and the
// metrics.
func (w *Worker) lifetime(ctx context.Context, log zerolog.Logger, sl *slot) error {
	s := &session{w: w, pending: map[string]*call{}, hello: make(chan inbound, 1), exited: make(chan struct{})}
	s.logs = newLogBudget(w.cfg.LogRate, w.cfg.LogBurst, func(n int) {
		s.lg().Warn().Int("suppressed", n).Msg("worker log lines suppressed: over the worker's log rate")
	})
	// The stored loggers are copies that are never written again: the
	// stderr reader may still hold the first while the second is stored.
	first := log
	s.logp.Store(&first)
	s.basep.Store(&first)
	if err := s.start(); err != nil {
		return err
	}
	withPid := log.With().Int("pid", s.cmd.Process.Pid).Logger()
	s.logp.Store(&withPid)
	s.basep.Store(&withPid)
	log = withPid

	var hello inbound
	t := time.NewTimer(w.cfg.HandshakeTimeout)
	select {
	case hello = <-s.hello:
		t.Stop()
	case <-s.exited:
		t.Stop()
		return startError(w.cfg, s.exitErr, s.tail.get())
	case <-t.C:
		s.kill("no hello within the handshake timeout")
		<-s.exited
		return fmt.Errorf("no hello within %s", w.cfg.HandshakeTimeout)
	case <-ctx.Done():
		// Nothing is in flight before the hello: no need to wait for
		// a setup to finish.
		t.Stop()
		s.kill("stopping before its hello")
		<-s.exited
		return nil
	}
	algs, err := s.algorithms(hello)
	if err != nil {
		log.Error().Err(err).Msg("worker hello refused")
		s.kill("hello refused")
		<-s.exited
		return err
	}
	names := make([]string, len(algs))
	for i, a := range algs {
		names[i] = a.Name()
	}
	named := log.With().Strs("algorithms", names).Logger()
	if len(names) == 1 {
		named = log.With().Str("algorithm", names[0]).Logger()
	}
	s.logp.Store(&named)

	md := map[string]string{"worker": strings.Join(w.cfg.Command, " "), "worker_pid": strconv.Itoa(s.cmd.Process.Pid)}
	if hello.SDK != "" {
		md["worker_sdk"] = hello.SDK
	}
	opts := append([]runner.Option{runner.WithLogger(w.cfg.Logger), runner.WithMetadata(md)}, w.cfg.RunnerOptions...)
	r, err := runner.New(w.nc, algs, opts...)
	if err != nil {
		s.kill("runner refused the algorithms")
		<-s.exited
		return err
	}
	runCtx, stopRunner := context.WithCancel(ctx)
	defer stopRunner()
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(runCtx) }()
	select {
	case <-r.Started():
		sl.serving.Store(r)
		defer sl.serving.Store(nil)
		s.lg().Info().Msg("worker serving")
		w.markServing(algs)
	case err := <-runErr:
		s.kill("runner failed to start")
		<-s.exited
		return err
	case <-s.exited:
	}

	select {
	case <-s.exited:
		// Its requests were answered 503 already; the runner leaves
		// discovery and drains (late requests get a not-started 503).
		stopRunner()
		<-runErr
		return fmt.Errorf("worker process exited: %w", s.exitErr)
	case err := <-runErr:
		if ctx.Err() == nil {
			s.kill("runner stopped")
			<-s.exited
			return fmt.Errorf("runner stopped: %w", err)
		}
		// Shutdown: the runner deregistered and drained; now let the
		// process finish.
		s.stop()
		return nil
	}
}

func (s *session) start() error {
	cfg := s.w.cfg
	cmd := exec.Command(cfg.Command[0], cfg.Command[1:]...)
	cmd.Dir = cfg.Dir
	cmd.Env = append(os.Environ(),
		"PNP_WORKER_PROTOCOL="+strconv.Itoa(ProtocolVersion),
		"PNP_MAX_PAYLOAD="+strconv.FormatInt(s.w.nc.MaxPayload(), 10),
	)
	cmd.Env = append(cmd.Env, cfg.Env...)
	setProcAttr(cmd)
	// Our ends of the three pipes are *os.Files: writes and reads can have
	// deadlines, and exec starts no goroutine to copy them, so Wait returns
	// when the process exits even while a child it started still holds
	// its stdout or stderr.
	var ends [6]*os.File
	closeAll := func() {
		for _, f := range ends {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := 0; i < len(ends); i += 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll()
			return fmt.Errorf("pipe: %w", err)
		}
		ends[i], ends[i+1] = r, w
	}
	inR, inW, outR, outW, errR, errW := ends[0], ends[1], ends[2], ends[3], ends[4], ends[5]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll()
		return fmt.Errorf("start %s: %w", cfg.Command[0], err)
	}
	// The process has its own copies of its ends.
	inR.Close()
	outW.Close()
	errW.Close()
	s.cmd, s.stdin = cmd, inW
	stdoutDone := make(chan struct{})
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		s.logStderr(errR)
	}()
	go func() {
		defer close(stdoutDone)
		s.readStdout(outR)
		s.failAll(&protocol.Error{Code: protocol.CodeUnavailable, Message: "worker process exited while running the request"})
	}()
	go func() {
		// Output ended while the process lives: it no longer speaks;
		// make sure it is gone.
		select {
		case <-stdoutDone:
		case <-s.exited:
			return
		}
		t := time.NewTimer(cfg.StopTimeout)
		defer t.Stop()
		select {
		case <-s.exited:
		case <-t.C:
			s.kill("stdout closed but the process did not exit")
		}
	}()
	go func() {
		// The process's exit ends the session, not the end of its
		// output: a child it started may hold stdout for ever.
		err := s.reap()
		if err == nil {
			err = errors.New("exit status 0")
		}
		s.exitErr = err
		// What the process wrote before it exited is still read; a
		// descendant that left its process group cannot hold the
		// readers past exitDrain.
		drain := time.Now().Add(exitDrain)
		_ = outR.SetReadDeadline(drain)
		_ = errR.SetReadDeadline(drain)
		<-stdoutDone
		<-stderrDone
		outR.Close()
		errR.Close()
		inW.Close()
		s.logs.flush()
		close(s.exited)
	}()
	return nil
}

// exitDrain bounds the reading of a process's stdout and stderr after it
// exited.
const exitDrain = time.Second

// reap waits for the process to exit, kills what is left of its process
// group (children holding its pipes, helpers it forked), and reaps it.
func (s *session) reap() error {
	if !awaitExit(s.cmd) {
		err := s.cmd.Wait()
		s.procMu.Lock()
		s.reaped = true
		s.procMu.Unlock()
		return err
	}
	s.procMu.Lock()
	defer s.procMu.Unlock()
	killProcess(s.cmd)
	err := s.cmd.Wait()
	s.reaped = true
	return err
}

// stop ends the process after shutdown: close its stdin (the protocol's
// "no more requests"), then kill it if it has not exited in StopTimeout.
func (s *session) stop() {
	s.wmu.Lock()
	s.stdin.Close()
	s.wmu.Unlock()
	t := time.NewTimer(s.w.cfg.StopTimeout)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		s.kill("did not exit after its stdin was closed")
		<-s.exited
	}
}

func (s *session) kill(why string) {
	s.killOnce.Do(func() {
		s.lg().Warn().Str("reason", why).Msg("killing worker process")
		s.markDead()
		s.procMu.Lock()
		defer s.procMu.Unlock()
		if !s.reaped {
			killProcess(s.cmd)
		}
	})
}

func (s *session) lg() *zerolog.Logger { return s.logp.Load() }

func (s *session) base() *zerolog.Logger { return s.basep.Load() }

func (s *session) markDead() {
	s.mu.Lock()
	s.dead = true
	s.mu.Unlock()
}

// algorithms turns a hello into runner algorithms.
func (s *session) algorithms(h inbound) ([]*runner.Algorithm, error) {
	if h.decodeErr != nil {
		return nil, fmt.Errorf("hello: %w", h.decodeErr)
	}
	if h.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("hello: protocol %d, want %d", h.Protocol, ProtocolVersion)
	}
	if len(h.Algorithms) == 0 {
		return nil, errors.New("hello: no algorithms")
	}
	if len(h.Algorithms) > MaxAlgorithms {
		return nil, fmt.Errorf("hello: %d algorithms, at most %d", len(h.Algorithms), MaxAlgorithms)
	}
	var algs []*runner.Algorithm
	var errs []error
	for _, d := range h.Algorithms {
		spec, err := d.spec()
		if err != nil {
			errs = append(errs, fmt.Errorf("algorithm %q: %w", d.Name, err))
			continue
		}
		name := d.Name
		var a *runner.Algorithm
		if d.Batch != nil {
			a, err = runner.NewBatchAlgorithm(spec, func(ctx context.Context, ins []json.RawMessage) ([]json.RawMessage, error) {
				return s.callBatch(ctx, name, ins)
			})
		} else {
			a, err = runner.NewRawAlgorithm(spec, func(ctx context.Context, in json.RawMessage) (json.RawMessage, error) {
				if e := checkInput(in, s.w.cfg.MaxInputDepth, s.w.cfg.MaxInputNumber); e != nil {
					return nil, e
				}
				r := s.call(ctx, request{Type: TypeRequest, Algorithm: name, Input: in}, 0)
				return r.output, r.err
			})
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		algs = append(algs, a)
	}
	return algs, errors.Join(errs...)
}

func (s *session) callBatch(ctx context.Context, name string, all []json.RawMessage) ([]json.RawMessage, error) {
	// Items beyond the input bounds are refused one by one; the others
	// go to the process.
	outs := make([]json.RawMessage, len(all))
	errs := make(runner.BatchErrors, len(all))
	ins, at := all[:0:0], make([]int, 0, len(all)) // at[k]: the place in all of ins[k]
	for i, in := range all {
		if e := checkInput(in, s.w.cfg.MaxInputDepth, s.w.cfg.MaxInputNumber); e != nil {
			errs[i] = e
			continue
		}
		ins, at = append(ins, in), append(at, i)
	}
	if len(ins) == 0 {
		return outs, errs
	}
	r := s.call(ctx, request{Type: TypeBatch, Algorithm: name, Inputs: ins}, len(ins))
	if r.err != nil {
		if len(ins) == len(all) {
			return nil, r.err
		}
		for _, i := range at {
			errs[i] = r.err
		}
		return outs, errs
	}
	for k, it := range r.outputs {
		i := at[k]
		if it.Error != nil {
			if it.Error.Detail != "" {
				s.base().Error().Str("algorithm", name).Int("item", i).Str("detail", cut(it.Error.Detail, maxDetail)).Msg("worker error")
			}
			errs[i] = workerError(it.Error.Code, it.Error.Message)
			continue
		}
		if len(it.Output) == 0 {
			s.base().Warn().Str("algorithm", name).Int("item", i).Msg("worker sent a batch item without output or error")
			errs[i] = &protocol.Error{Code: protocol.CodeInternal, Message: "worker sent a malformed reply"}
			continue
		}
		outs[i] = it.Output
	}
	return outs, errs
}

// call sends req and waits for its answer or ctx's end. After ctx ends
// the process is told to cancel, and killed if it has not answered within
// CancelGrace.
func (s *session) call(ctx context.Context, req request, batch int) result {
	id := strconv.FormatUint(s.nextID.Add(1), 36)
	req.ID = id
	c := &call{ctx: ctx, algorithm: req.Algorithm, job: runner.JobID(ctx), batch: batch, ch: make(chan result, 1)}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return result{err: &protocol.Error{Code: protocol.CodeUnavailable, Message: "worker process is restarting", NotStarted: true}}
	}
	s.pending[id] = c
	s.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(1, time.Until(d).Milliseconds())
	}
	if batch == 0 {
		req.JobID = c.job
	}
	// A write that fails answers the request through c.ch (writeFailed);
	// one that times out leaves it to ctx.
	s.sendRequest(ctx, &req)
	select {
	case r := <-c.ch:
		return r
	case <-ctx.Done():
	}
	cctx, stop := context.WithTimeout(context.Background(), s.w.cfg.CancelGrace)
	if err := s.send(cctx, cancel{Type: TypeCancel, ID: id}); err != nil {
		s.lg().Debug().Err(err).Str("id", id).Msg("sending cancel")
	}
	go func() {
		defer stop()
		select {
		case <-c.ch:
			s.base().Debug().Str("algorithm", req.Algorithm).Str("id", id).Msg("cancelled request answered")
		case <-s.exited:
		case <-cctx.Done():
			s.base().Error().Str("algorithm", req.Algorithm).Str("id", id).Dur("grace", s.w.cfg.CancelGrace).Msg("worker ignored a cancel past the grace")
			s.kill("ignored a cancel")
		}
	}()
	return result{err: ctx.Err()}
}

// send writes one message, after the lines queued before it, giving up
// when ctx ends. Its error is only that msg does not encode: a write that
// fails is the writer's to handle (writeFailed).
func (s *session) send(ctx context.Context, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	s.wq.add(ctx, append(b, '\n'), "")
	s.writeQueued()
	return nil
}

// sendRequest writes a request or batch line, built from the input's
// bytes, giving up when ctx ends.
func (s *session) sendRequest(ctx context.Context, req *request) {
	s.wmu.Lock()
	s.wq.buf = appendRequest(s.wq.buf, req.Type, req.ID, req.Algorithm, req.Input, req.Inputs, req.TimeoutMS, req.JobID)
	s.wq.add(ctx, nil, req.ID)
	s.writeQueued()
}

// take removes and returns the pending call id, or nil.
func (s *session) take(id string) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pending[id]
	delete(s.pending, id)
	return c
}

func (s *session) failAll(err *protocol.Error) {
	s.mu.Lock()
	s.dead = true
	pending := s.pending
	s.pending = map[string]*call{}
	s.mu.Unlock()
	for _, c := range pending {
		e := *err
		c.ch <- result{err: &e}
	}
}

// readStdout reads protocol lines until the process closes stdout.
func (s *session) readStdout(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, tooLong, err := readLine(br, s.w.cfg.MaxLine, 4096)
		if tooLong {
			s.malformed(line, fmt.Sprintf("line longer than %d bytes", s.w.cfg.MaxLine))
		} else if len(bytes.TrimSpace(line)) > 0 {
			s.dispatch(line)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				s.lg().Warn().Err(err).Msg("reading worker stdout")
			}
			return
		}
	}
}

// readLine reads one line of at most limit bytes. A longer line is
// consumed whole; its first keep bytes are returned with tooLong set.
func readLine(r *bufio.Reader, limit, keep int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			line = append(line, chunk[:min(len(chunk), max(0, keep-len(line)))]...)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = r.ReadSlice('\n')
			}
			return line, true, err
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, false, err
	}
}

func (s *session) dispatch(line []byte) {
	var m inbound
	if scanResult(line, &m) {
		// A plain result: its output stays the line's bytes.
	} else if err := json.Unmarshal(line, &m); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && m.Type == TypeProgress {
			s.badProgress(m.ID, "a field of the wrong type: "+err.Error())
			return
		}
		if !errors.As(err, &typeErr) || m.Type != TypeHello {
			s.malformed(line, "not a JSON object: "+err.Error())
			return
		}
		// A hello with a field of the wrong type (a max_concurrency
		// of 1e20) is refused as such, not ignored until the handshake
		// times out.
		m.decodeErr = err
	}
	switch m.Type {
	case TypeHello:
		select {
		case s.hello <- m:
		default:
			s.lg().Warn().Msg("worker sent a second hello; ignored")
		}
	case TypeLog:
		s.logMessage(m)
	case TypeProgress:
		s.progress(m)
	case TypeResult:
		c := s.take(m.ID)
		if c == nil {
			s.lg().Debug().Str("id", m.ID).Msg("result for a request no longer waiting")
			return
		}
		switch {
		case c.batch > 0 && len(m.Results) == c.batch:
			c.ch <- result{outputs: m.Results}
		case c.batch == 0 && len(m.Output) > 0:
			c.ch <- result{output: m.Output}
		default:
			s.base().Warn().Str("algorithm", c.algorithm).Str("id", m.ID).Msg("worker sent a result without output (or with the wrong number of batch results)")
			c.ch <- result{err: &protocol.Error{Code: protocol.CodeInternal, Message: "worker sent a malformed reply"}}
		}
	case TypeError:
		c := s.take(m.ID)
		if c == nil {
			s.lg().Debug().Str("id", m.ID).Msg("error for a request no longer waiting")
			return
		}
		ev := s.base().Debug()
		if m.Code >= 500 || m.Code == 0 {
			ev = s.base().Error()
		}
		if c.job != "" {
			ev = ev.Str("job_id", c.job)
		}
		ev.Str("algorithm", c.algorithm).Str("id", m.ID).Int("code", m.Code).Str("error", cut(m.Message, maxDetail)).Str("detail", cut(m.Detail, maxDetail)).Msg("worker error")
		c.ch <- result{err: workerError(m.Code, m.Message)}
	default:
		s.malformed(line, fmt.Sprintf("unknown message type %q", m.Type))
	}
}

// idPattern finds the id of a line that is not valid JSON, so that only
// the request it answers fails.
var idPattern = regexp.MustCompile(`"id"\s*:\s*"([^"\\]{1,64})"`)

// malformed logs a line that breaks the protocol and fails the request it
// names, if any, with a 500.
func (s *session) malformed(line []byte, why string) {
	var id string
	if m := idPattern.FindSubmatch(line); m != nil {
		id = string(m[1])
	}
	shown := line
	if len(shown) > 200 {
		shown = shown[:200]
	}
	if progressPattern.Match(line) {
		// A broken progress report answers nothing: it fails no request.
		s.badProgress(id, why)
		return
	}
	if c := s.take(id); c != nil {
		s.base().Warn().Str("problem", why).Str("line", strings.TrimSpace(string(shown))).
			Str("algorithm", c.algorithm).Str("id", id).Msg("worker broke the protocol; failing that request")
		c.ch <- result{err: &protocol.Error{Code: protocol.CodeInternal, Message: "worker sent a malformed reply"}}
		return
	}
	// A line that answers nothing costs the process nothing to repeat:
	// it is logged within the log budget.
	if s.logs.allow() {
		s.base().Warn().Str("problem", why).Str("line", strings.TrimSpace(string(shown))).Msg("worker broke the protocol; line ignored")
	}
}

func (s *session) logMessage(m inbound) {
	if !s.logs.allow() {
		return
	}
	if len(m.Message) > s.w.cfg.MaxLogLine {
		m.Message = m.Message[:s.w.cfg.MaxLogLine]
	}
	var ev *zerolog.Event
	log := s.lg()
	if m.Algorithm != "" {
		log = s.base()
	}
	switch strings.ToLower(m.Level) {
	case "debug", "trace":
		ev = log.Debug()
	case "warn", "warning":
		ev = log.Warn()
	case "error", "critical", "fatal":
		ev = log.Error()
	default:
		ev = log.Info()
	}
	if m.Algorithm != "" {
		ev = ev.Str("algorithm", m.Algorithm)
	}
	if m.ID != "" {
		ev = ev.Str("id", m.ID)
	}
	if m.JobID != "" {
		ev = ev.Str("job_id", m.JobID)
	}
	ev.Str("source", "worker").Msg(m.Message)
}

// logStderr logs each line the process writes to stderr, within the log
// budget; a line longer than MaxLogLine is cut there. Reading never waits
// for the budget: lines over it are dropped and counted, so a flood costs
// the process nothing it would notice and the log a bounded amount.
//
// A Python traceback is one entry, not one per line (see stderrGroups),
// and the last lines are kept for the error of a process that ends
// before its hello.
func (s *session) logStderr(r io.Reader) {
	br := bufio.NewReaderSize(r, 16<<10)
	groups := stderrGroups{max: s.w.cfg.MaxLogLine}
	emit := func(entry string, truncated bool) {
		if !s.logs.allow() {
			return
		}
		ev := s.lg().Info().Str("source", "stderr")
		if truncated {
			ev = ev.Bool("truncated", true)
		}
		ev.Msg(entry)
	}
	for {
		line, tooLong, err := readLine(br, s.w.cfg.MaxLogLine, s.w.cfg.MaxLogLine)
		t := strings.TrimRight(string(line), "\r\n")
		s.tail.add(t)
		if entry, ok := groups.add(t); ok {
			emit(entry, tooLong)
		}
		if err != nil {
			if entry, ok := groups.flush(); ok {
				emit(entry, false)
			}
			return
		}
	}
}

// maxDetail bounds the message and detail (a traceback) of a worker error
// in the log: one entry per failed request, each of bounded size.
const maxDetail = 16 << 10

// cut returns s cut to at most n bytes.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// logBudget bounds the log entries a process causes with its stderr lines,
// log messages and ignored lines: a token bucket of burst entries refilled
// at rate per second. Entries over the budget are dropped and counted, and
// their number is reported at most once a second (and when the process
// ends). It never blocks.
type logBudget struct {
	rate, burst float64
	report      func(suppressed int)

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
	timer      *time.Timer // armed while suppressed lines wait to be reported
}

func newLogBudget(rate, burst int, report func(int)) *logBudget {
	return &logBudget{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: time.Now(), report: report}
}

// allow takes one entry from the budget, or counts it as suppressed.
func (b *logBudget) allow() bool {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	b.suppressed++
	if b.timer == nil {
		b.timer = time.AfterFunc(time.Second, b.flush)
	}
	return false
}

// flush reports the entries suppressed since the last report.
func (b *logBudget) flush() {
	b.mu.Lock()
	n := b.suppressed
	b.suppressed = 0
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.mu.Unlock()
	if n > 0 {
		b.report(n)
	}
}

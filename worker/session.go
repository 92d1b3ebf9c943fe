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

	"pnpworker/runner"
)

// session is one lifetime of one worker process.
type session struct {
	w     *Worker
	logp  atomic.Pointer[zerolog.Logger] // with pid, then algorithm names
	basep atomic.Pointer[zerolog.Logger] // with pid: for entries that name their algorithm
	cmd   *exec.Cmd
	stdin *os.File

	wmu sync.Mutex // serialises writes to stdin

	mu      sync.Mutex
	pending map[string]*call
	dead    bool // the process can take no more requests

	nextID   atomic.Uint64
	hello    chan inbound  // the first hello, handed to lifetime
	exited   chan struct{} // closed once stdout ended and the process was reaped
	exitErr  error         // why it exited; read after exited is closed
	killOnce sync.Once
}

// call is a request sent to the process and not yet answered.
type call struct {
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
// stopped.
func (w *Worker) lifetime(ctx context.Context, log zerolog.Logger) error {
	s := &session{w: w, pending: map[string]*call{}, hello: make(chan inbound, 1), exited: make(chan struct{})}
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
		return fmt.Errorf("exited before its hello: %w", s.exitErr)
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
		s.lg().Info().Msg("worker serving")
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
	// Our end of stdin is an *os.File so writes can have deadlines: a
	// process that stops reading cannot block requests forever.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdin pipe: %w", err)
	}
	cmd.Stdin = pr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("stdout pipe: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("stderr pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", cfg.Command[0], err)
	}
	pr.Close()
	s.cmd, s.stdin = cmd, pw
	var stderrDone sync.WaitGroup
	stderrDone.Add(1)
	go func() {
		defer stderrDone.Done()
		s.logStderr(stderr)
	}()
	go func() {
		s.readStdout(stdout)
		s.failAll(&runner.Error{Code: runner.CodeUnavailable, Message: "worker process exited while running the request"})
		// Output ended: the process is gone or no longer speaks; make
		// sure it is gone.
		reaped := make(chan struct{})
		go func() {
			select {
			case <-reaped:
			case <-time.After(s.w.cfg.StopTimeout):
				s.kill("stdout closed but the process did not exit")
			}
		}()
		stderrDone.Wait()
		s.exitErr = cmd.Wait()
		close(reaped)
		if s.exitErr == nil {
			s.exitErr = errors.New("exit status 0")
		}
		pw.Close()
		close(s.exited)
	}()
	return nil
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
		killProcess(s.cmd)
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
	if h.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("hello: protocol %d, want %d", h.Protocol, ProtocolVersion)
	}
	if len(h.Algorithms) == 0 {
		return nil, errors.New("hello: no algorithms")
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

func (s *session) callBatch(ctx context.Context, name string, ins []json.RawMessage) ([]json.RawMessage, error) {
	r := s.call(ctx, request{Type: TypeBatch, Algorithm: name, Inputs: ins}, len(ins))
	if r.err != nil {
		return nil, r.err
	}
	outs := make([]json.RawMessage, len(ins))
	errs := make(runner.BatchErrors, len(ins))
	for i, it := range r.outputs {
		if it.Error != nil {
			if it.Error.Detail != "" {
				s.base().Error().Str("algorithm", name).Int("item", i).Str("detail", it.Error.Detail).Msg("worker error")
			}
			errs[i] = workerError(it.Error.Code, it.Error.Message)
			continue
		}
		if len(it.Output) == 0 {
			s.base().Warn().Str("algorithm", name).Int("item", i).Msg("worker sent a batch item without output or error")
			errs[i] = &runner.Error{Code: runner.CodeInternal, Message: "worker sent a malformed reply"}
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
	c := &call{algorithm: req.Algorithm, job: runner.JobID(ctx), batch: batch, ch: make(chan result, 1)}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return result{err: &runner.Error{Code: runner.CodeUnavailable, Message: "worker process is restarting", NotStarted: true}}
	}
	s.pending[id] = c
	s.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		req.TimeoutMS = max(1, time.Until(d).Milliseconds())
	}
	if batch == 0 {
		req.JobID = c.job
	}
	if err := s.send(ctx, req); err != nil {
		s.take(id)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The process did not read its input for the whole time
			// budget, and a line may be half written: it must go.
			s.kill("stopped reading its stdin")
			// The write's deadline is the caller's: the budget is spent,
			// and the caller is answered 504 like any request whose
			// deadline passed. ctx ends at that same instant, so the wait
			// is bounded; answering from ctx keeps the reply the same
			// whether the runner's deadline timer or this return comes
			// first.
			<-ctx.Done()
			return result{err: ctx.Err()}
		}
		return result{err: &runner.Error{Code: runner.CodeUnavailable, Message: "worker process is not taking requests", NotStarted: true, Err: err}}
	}
	select {
	case r := <-c.ch:
		return r
	case <-ctx.Done():
	}
	cctx, stop := context.WithTimeout(context.Background(), s.w.cfg.CancelGrace)
	if err := s.send(cctx, cancel{Type: TypeCancel, ID: id}); err != nil {
		s.lg().Debug().Err(err).Str("id", id).Msg("sending cancel")
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.kill("stopped reading its stdin")
		}
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

// send writes one message, giving up when ctx ends.
func (s *session) send(ctx context.Context, msg any) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		_ = s.stdin.SetWriteDeadline(d)
	} else {
		_ = s.stdin.SetWriteDeadline(time.Time{})
	}
	_, err = s.stdin.Write(b)
	return err
}

// take removes and returns the pending call id, or nil.
func (s *session) take(id string) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.pending[id]
	delete(s.pending, id)
	return c
}

func (s *session) failAll(err *runner.Error) {
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
		line, tooLong, err := readLine(br, s.w.cfg.MaxLine)
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

// readLine reads one line of at most max bytes. A longer line is consumed
// whole; its first 4 KiB are returned with tooLong set.
func readLine(r *bufio.Reader, limit int) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			line = append(line, chunk[:min(len(chunk), max(0, 4096-len(line)))]...)
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
	if err := json.Unmarshal(line, &m); err != nil {
		s.malformed(line, "not a JSON object: "+err.Error())
		return
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
			c.ch <- result{err: &runner.Error{Code: runner.CodeInternal, Message: "worker sent a malformed reply"}}
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
		ev.Str("algorithm", c.algorithm).Str("id", m.ID).Int("code", m.Code).Str("error", m.Message).Str("detail", m.Detail).Msg("worker error")
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
	ev := s.base().Warn().Str("problem", why).Str("line", strings.TrimSpace(string(shown)))
	if c := s.take(id); c != nil {
		ev.Str("algorithm", c.algorithm).Str("id", id).Msg("worker broke the protocol; failing that request")
		c.ch <- result{err: &runner.Error{Code: runner.CodeInternal, Message: "worker sent a malformed reply"}}
		return
	}
	ev.Msg("worker broke the protocol; line ignored")
}

func (s *session) logMessage(m inbound) {
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

// logStderr logs each line the process writes to stderr.
func (s *session) logStderr(r io.Reader) {
	br := bufio.NewReaderSize(r, 16<<10)
	for {
		line, _, err := readLine(br, 64<<10)
		if t := strings.TrimRight(string(line), "\r\n"); t != "" {
			s.lg().Info().Str("source", "stderr").Msg(t)
		}
		if err != nil {
			return
		}
	}
}

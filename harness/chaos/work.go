// Package chaos runs the fault scenarios of docs/RELIABILITY.md: real
// processes of the pnp binary (runners, controllers, a NATS server) killed
// with SIGKILL and restarted, a 3-node JetStream cluster losing its stream
// leader, overload bursts and a soak, while jobs flow, and then counts what
// came out: every job the publisher saw acknowledged must have exactly one
// final result.
//
// Everything listens on loopback and every scenario is bounded in time and
// in the number of jobs. `pnp chaos` runs the scenarios; the package's tests
// run short versions of them.
package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// Algorithm is the name of the algorithm the scenarios run: it sleeps as
// long as the job asks, fails when asked, and records every completed
// execution, so duplicates can be counted across processes that die.
const Algorithm = "chaos_work"

// Input is a chaos_work job.
type Input struct {
	// ID repeats the job id, so executions can be attributed to a job.
	ID string `json:"id"`
	// SleepMS is how long the execution takes.
	SleepMS int `json:"sleep_ms,omitempty"`
	// Fail makes the execution fail with a 500 (retried by the controller)
	// or, with Reject, a 422 (final).
	Fail   bool `json:"fail,omitempty"`
	Reject bool `json:"reject,omitempty"`
	// Pad makes the body larger.
	Pad string `json:"pad,omitempty"`
}

// Output is chaos_work's reply.
type Output struct {
	ID  string `json:"id"`
	PID int    `json:"pid"`
}

const inputSchema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id"],
  "additionalProperties": false,
  "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 255},
    "sleep_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
    "fail": {"type": "boolean"},
    "reject": {"type": "boolean"},
    "pad": {"type": "string", "maxLength": 1000000}
  }
}`

const outputSchema = `{
  "type": "object",
  "required": ["id", "pid"],
  "properties": {"id": {"type": "string"}, "pid": {"type": "integer"}}
}`

// ExecLog records completed executions, one job id per line, in a file of
// its own per process. Lines are written with one write(2) each on a file
// opened O_APPEND, so a process killed with SIGKILL loses no line it wrote.
type ExecLog struct {
	mu sync.Mutex
	f  *os.File
}

// OpenExecLog creates dir/exec-<pid>.log.
func OpenExecLog(dir string) (*ExecLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("exec-%d.log", os.Getpid())), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("chaos: exec log: %w", err)
	}
	return &ExecLog{f: f}, nil
}

// Record appends id.
func (l *ExecLog) Record(id string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.f.WriteString(id + "\n")
}

// Close closes the file.
func (l *ExecLog) Close() error {
	if l == nil {
		return nil
	}
	return l.f.Close()
}

// ReadExecutions counts completed executions per job id over every exec
// log in dir.
func ReadExecutions(dir string) (map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "exec-*.log"))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line != "" {
				out[line]++
			}
		}
	}
	return out, nil
}

// NewAlgorithm returns chaos_work recording its executions in log (which
// may be nil), with a time budget of timeout (zero: the runner default). An execution counts once the function has done its work;
// one killed before is not an execution.
func NewAlgorithm(log *ExecLog, timeout time.Duration, maxConcurrency, maxPending int) (*runner.Algorithm, error) {
	pid := os.Getpid()
	return runner.NewAlgorithm(runner.Spec{
		Name:           Algorithm,
		Version:        "1.0.0",
		Description:    "fault-test workload: sleeps, fails or rejects on request",
		InputSchema:    []byte(inputSchema),
		OutputSchema:   []byte(outputSchema),
		Timeout:        timeout,
		MaxConcurrency: maxConcurrency,
		MaxPending:     maxPending,
	}, func(ctx context.Context, in Input) (Output, error) {
		if in.SleepMS > 0 {
			t := time.NewTimer(time.Duration(in.SleepMS) * time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return Output{}, ctx.Err()
			}
		}
		if in.Reject {
			return Output{}, protocol.Reject("rejected on request")
		}
		if in.Fail {
			return Output{}, protocol.Errorf(protocol.CodeInternal, "failed on request")
		}
		log.Record(in.ID)
		return Output{ID: in.ID, PID: pid}, nil
	})
}

package worker

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// ProtocolVersion is the version of the worker protocol (docs/WORKER.md)
// this package speaks. A worker's hello must carry it.
const ProtocolVersion = 1

// Bounds of a hello. A hello beyond them is refused (logged, the process
// killed and restarted with backoff): what a process declares decides what
// the runner sets aside for it, so the declaration is bounded.
const (
	// MaxAlgorithms is the most algorithms one hello may describe.
	MaxAlgorithms = 64
	// MaxConcurrency is the largest max_concurrency of an algorithm.
	MaxConcurrency = 4096
	// MaxBatchSize is the largest batch max_size of an algorithm.
	MaxBatchSize = 1024
)

// Message types of the protocol. A worker sends hello, result, error, log
// and progress; the runner sends request, batch and cancel.
const (
	TypeHello  = "hello"
	TypeResult = "result"
	TypeError  = "error"
	TypeLog    = "log"
	// TypeProgress reports how far a request got (runner.Progress):
	// {"type":"progress","id":<request id>,"fraction":0.5,"message":"..."}.
	TypeProgress = "progress"
	TypeRequest  = "request"
	TypeBatch    = "batch"
	TypeCancel   = "cancel"
)

// Descriptor is a worker's description of one algorithm, sent in its hello.
// It becomes a runner.Spec.
type Descriptor struct {
	// Name, Version, Description: as runner.Spec.
	Name        string `json:"name"`
	Version     string `json:"version"`
	Description string `json:"description,omitempty"`
	// InputSchema and OutputSchema are JSON Schema documents (objects).
	InputSchema  json.RawMessage `json:"input_schema"`
	OutputSchema json.RawMessage `json:"output_schema"`
	// TimeoutMS is the default time budget of one request; 0 means
	// protocol.DefaultTimeout.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
	// MaxConcurrency is how many requests of this algorithm the worker
	// process takes at once; 0 means 1 (the safe choice for a process that
	// did not say). For a batch algorithm it counts items.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Batch, when present, makes the algorithm a batch algorithm: the
	// runner groups requests and sends them in batch messages.
	Batch *Batch `json:"batch,omitempty"`
}

// Batch is a batch algorithm's grouping: at most MaxSize items, waiting at
// most MaxWaitMS for company.
type Batch struct {
	MaxSize   int     `json:"max_size"`
	MaxWaitMS float64 `json:"max_wait_ms,omitempty"`
}

// spec turns d into a runner.Spec.
func (d Descriptor) spec() (runner.Spec, error) {
	s := runner.Spec{
		Name:           d.Name,
		Version:        d.Version,
		Description:    d.Description,
		InputSchema:    d.InputSchema,
		OutputSchema:   d.OutputSchema,
		Timeout:        time.Duration(d.TimeoutMS) * time.Millisecond,
		MaxConcurrency: d.MaxConcurrency,
	}
	if d.TimeoutMS < 0 || d.TimeoutMS > runner.MaxTimeout.Milliseconds() {
		// Checked before it is multiplied: a huge value must not wrap
		// round into a plausible one.
		return s, fmt.Errorf("timeout_ms %d: want 0 to %d", d.TimeoutMS, runner.MaxTimeout.Milliseconds())
	}
	if d.MaxConcurrency < 0 || d.MaxConcurrency > MaxConcurrency {
		return s, fmt.Errorf("max_concurrency %d: want 1 to %d (absent means the default)", d.MaxConcurrency, MaxConcurrency)
	}
	if s.MaxConcurrency == 0 && d.Batch == nil {
		s.MaxConcurrency = 1
	}
	if d.Batch != nil {
		if d.Batch.MaxSize < 1 || d.Batch.MaxSize > MaxBatchSize || !(d.Batch.MaxWaitMS >= 0 && d.Batch.MaxWaitMS <= 60000) {
			return s, fmt.Errorf("batch: max_size %d, max_wait_ms %g: want max_size 1 to %d and max_wait_ms 0 to 60000", d.Batch.MaxSize, d.Batch.MaxWaitMS, MaxBatchSize)
		}
		s.MaxBatch = d.Batch.MaxSize
		s.MaxWait = time.Duration(d.Batch.MaxWaitMS * float64(time.Millisecond))
	}
	return s, nil
}

// inbound is any message a worker sends.
type inbound struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// hello
	Protocol   int          `json:"protocol"`
	Algorithms []Descriptor `json:"algorithms"`
	SDK        string       `json:"sdk"`
	// result
	Output  json.RawMessage `json:"output"`
	Results []itemResult    `json:"results"`
	// error
	Code    int    `json:"code"`
	Message string `json:"message"`
	Detail  string `json:"detail"`
	// log
	Level     string `json:"level"`
	Algorithm string `json:"algorithm"`
	JobID     string `json:"job_id"`
	// progress (and message, above)
	Fraction *float64 `json:"fraction"`

	decodeErr error // a hello whose fields did not decode
}

type itemResult struct {
	Output json.RawMessage `json:"output,omitempty"`
	Error  *itemError      `json:"error,omitempty"`
}

type itemError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Detail  string `json:"detail,omitempty"`
}

// request is a request or batch message to a worker.
type request struct {
	Type      string            `json:"type"`
	ID        string            `json:"id"`
	Algorithm string            `json:"algorithm"`
	Input     json.RawMessage   `json:"input,omitempty"`
	Inputs    []json.RawMessage `json:"inputs,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
	JobID     string            `json:"job_id,omitempty"`
}

type cancel struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// workerError turns an error reported by a worker into the reply's error:
// codes outside the protocol's become 500, and a 500's message is the
// generic one (the worker's text may hold internals; it is logged).
func workerError(code int, message string) *protocol.Error {
	switch code {
	case protocol.CodeInvalidInput, protocol.CodeNotFound, protocol.CodeTooLarge, protocol.CodeUnprocessable, protocol.CodeUnavailable, protocol.CodeDeadline:
		if message == "" {
			message = fmt.Sprintf("error %d", code)
		}
		return &protocol.Error{Code: code, Message: message}
	}
	return &protocol.Error{Code: protocol.CodeInternal, Message: protocol.ErrInternal.Message, Err: fmt.Errorf("worker error %d: %s", code, message)}
}

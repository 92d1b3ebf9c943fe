package jobs

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/protocol"
)

// Status is the state a result record reports.
type Status string

// The statuses of schemas/result.json. Succeeded, failed and cancelled
// are final.
const (
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusRetrying  Status = "retrying"
	// StatusCancelled is the outcome of a job cancelled with
	// Store.Cancel: it never runs again and is never retried.
	StatusCancelled Status = "cancelled"
	// StatusRunning is the record of a job whose runner reported its
	// progress (Result.Progress) while it runs; the final record replaces
	// it.
	StatusRunning Status = "running"
	// StatusScheduled (schedule.go) is reported, never stored.
)

// Statuses lists every status a record may have, for the checks of a
// status a caller names (ListOptions.Status).
var Statuses = []Status{StatusSucceeded, StatusFailed, StatusRetrying, StatusCancelled, StatusRunning}

// MaxRecordedInput bounds the input a result record keeps (Result.Input),
// in bytes: enough for the usual input and for one naming its data by
// obj:// reference, little next to the output.
const MaxRecordedInput = 1024

// Final reports whether s is an outcome (succeeded, failed or cancelled)
// rather than a step on the way.
func (s Status) Final() bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// Result is the record stored under the job id in the results bucket. Its
// JSON form is defined by schemas/result.json.
type Result struct {
	JobID     string          `json:"job_id"`
	Algorithm string          `json:"algorithm"`
	Status    Status          `json:"status"`
	Output    json.RawMessage `json:"output,omitempty"`
	// OutputRef replaces Output when the output was too large for a
	// message: an obj:// reference to it in the outputs bucket (see
	// Store.Output).
	OutputRef string          `json:"output_ref,omitempty"`
	Error     *protocol.Error `json:"error,omitempty"`
	// Attempts counts dispatches to a runner. Waiting for a runner to
	// appear and controller restarts do not count.
	Attempts    int        `json:"attempts"`
	Instance    string     `json:"instance,omitempty"`
	Version     string     `json:"version,omitempty"`
	Controller  string     `json:"controller,omitempty"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	DurationMS  *float64   `json:"duration_ms,omitempty"`
	// NextAttemptAt is set on retrying records.
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	// DeadLetterSeq is the sequence of the job's message in stream DEAD,
	// set on failed records.
	DeadLetterSeq uint64 `json:"dead_letter_seq,omitempty"`
	// NotBefore is when a delayed job may run, set on scheduled records.
	NotBefore *time.Time `json:"not_before,omitempty"`
	// Input is the job's input when it is JSON of at most
	// MaxRecordedInput bytes (an input naming its data by obj://
	// reference usually is); InputBytes is its size in any case.
	Input      json.RawMessage `json:"input,omitempty"`
	InputBytes int             `json:"input_bytes,omitempty"`
	// TraceID is the trace id of the job's traceparent header, when it
	// carried a valid one (docs/PROTOCOL.md).
	TraceID string `json:"trace_id,omitempty"`
	// Progress is the latest progress the job's runner reported, set on
	// running records.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is how far a running job got, as its runner last reported it
// (runner.Progress, docs/JOBS.md "Progress").
type Progress struct {
	// Fraction is how much of the job is done, from 0 to 1.
	Fraction float64 `json:"fraction"`
	// Message says what the job is doing: one line of printable text, at
	// most protocol.MaxProgressMessage bytes.
	Message string `json:"message,omitempty"`
	// UpdatedAt is when the controller received the report.
	UpdatedAt time.Time `json:"updated_at"`
}

// Err returns nil unless r is a failed record; then an error naming the
// job with its code and message ("job <id> failed: 504 timeout"), which
// unwraps to r.Error, so errors.Is matches the protocol's sentinels and
// errors.As finds the *protocol.Error with its details. A failed record
// without an error gives "job <id> failed".
func (r Result) Err() error {
	if r.Status != StatusFailed {
		return nil
	}
	return &failedError{id: r.JobID, err: r.Error}
}

// failedError is the error of a failed record (Result.Err).
type failedError struct {
	id  string
	err *protocol.Error
}

func (e *failedError) Error() string {
	if e.err == nil {
		return "job " + e.id + " failed"
	}
	return fmt.Sprintf("job %s failed: %d %s", e.id, e.err.Code, e.err.Message)
}

func (e *failedError) Unwrap() error {
	if e.err == nil {
		return nil
	}
	return e.err
}

// Job message headers. A job is a message on jobs.<algorithm> whose body is
// the algorithm's input JSON; every header is optional.
const (
	// HeaderMsgID is JetStream's de-duplication header. It names the job
	// unless HeaderJobID is set: a second message with the same id inside
	// the duplicate window is not stored.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderJobID names the job when present, taking precedence over
	// HeaderMsgID. Replays set it so a job keeps its id while its message
	// gets a fresh de-duplication id. It is also sent to the runner.
	HeaderJobID = protocol.HeaderJobID
	// HeaderTimeout is a per-job time budget, a Go duration such as "2s".
	// It can only shorten the algorithm's own timeout.
	HeaderTimeout = protocol.HeaderTimeout
	// HeaderNotify names a subject the final result record is published to
	// (core NATS, best effort) once it is stored. It must satisfy
	// ValidNotifySubject: a job naming any other subject fails with 400.
	HeaderNotify = "Pnp-Notify"
)

// NotifySubjectPrefix starts every subject HeaderNotify may name
// (protocol.NotifySubjectPrefix). No stream of the system captures it
// (Provision refuses to run when one does), so a notification can never
// write a result, a dead letter or a job.
const NotifySubjectPrefix = protocol.NotifySubjectPrefix

// ValidNotifySubject reports whether subj may receive a job's result
// record (protocol.ValidNotifySubject): "notify." followed by one or more
// non-empty tokens, without wildcards, whitespace or control characters,
// at most 255 bytes.
func ValidNotifySubject(subj string) bool { return protocol.ValidNotifySubject(subj) }

// Dead letter headers. A dead letter is a message on dead.<algorithm> in
// stream DEAD whose body is the job's original body; it keeps the job's
// own headers (except the Nats-* ones, which would change how JetStream
// stores it) and adds these.
const (
	// HeaderJobID (above) carries the job id.
	HeaderDeadReason   = "Pnp-Dead-Reason"   // the error message
	HeaderDeadCode     = "Pnp-Dead-Code"     // the error code, e.g. 400
	HeaderDeadAttempts = "Pnp-Dead-Attempts" // dispatches made
	HeaderDeadAt       = "Pnp-Dead-At"       // RFC 3339 time
	HeaderJobSeq       = "Pnp-Job-Seq"       // the job's sequence in JOBS
	HeaderSubmittedAt  = "Pnp-Submitted-At"  // RFC 3339 time JOBS stored the job
	HeaderDeadError    = "Pnp-Dead-Error"    // the error as JSON (error.json)
	// HeaderDeadBodyOmitted is set, to the body's size in bytes, when the
	// job's body did not fit in the dead letter next to its headers: the
	// dead letter has an empty body and cannot be replayed.
	HeaderDeadBodyOmitted = "Pnp-Dead-Body-Omitted"
	// HeaderDeadHeadersOmitted is set, to their size in bytes, when the
	// job's own headers did not fit in the dead letter: only the Pnp-*
	// headers of the pipeline are kept.
	HeaderDeadHeadersOmitted = "Pnp-Dead-Headers-Omitted"
)

// ReservedHeader reports whether a job header is one the pipeline sets
// in a dead letter (or JetStream's own): a producer's copy is dropped, so
// that no dead letter carries a forged reason, sequence or marker.
func ReservedHeader(k string) bool {
	k = strings.ToLower(k)
	return strings.HasPrefix(k, "nats-") || strings.HasPrefix(k, "pnp-dead-") ||
		k == strings.ToLower(HeaderJobID) || k == strings.ToLower(HeaderJobSeq) || k == strings.ToLower(HeaderSubmittedAt)
}

// HeaderSize is the size of h on the wire ("k: v\r\n" per value, plus
// the NATS/1.0 line and the blank line that ends the block).
func HeaderSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// maxJobIDLen is the longest job id (protocol.MaxJobIDLen).
const maxJobIDLen = protocol.MaxJobIDLen

// ValidJobID reports whether id can name a job (protocol.ValidJobID): at
// most 255 letters, digits, '_', '=', '-', and single dots between them.
// Such an id is a valid key in the results bucket.
func ValidJobID(id string) bool { return protocol.ValidJobID(id) }

// autoPrefix begins the ids the controller gives jobs that came without
// one, which a producer may not choose.
const autoPrefix = protocol.AutoJobIDPrefix

// ReservedJobID reports whether id has the form of an id the controller
// assigns (the auto- prefix), which a producer may not choose
// (protocol.ReservedJobID).
func ReservedJobID(id string) bool { return protocol.ReservedJobID(id) }

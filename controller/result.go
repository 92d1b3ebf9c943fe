package controller

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"pnpworker/protocol"
)

// Status is the state a result record reports.
type Status string

// The statuses of schemas/result.json. Succeeded and failed are final.
const (
	StatusSucceeded Status = "succeeded"
	StatusFailed    Status = "failed"
	StatusRetrying  Status = "retrying"
)

// Final reports whether s is an outcome (succeeded or failed) rather than a
// step on the way.
func (s Status) Final() bool { return s == StatusSucceeded || s == StatusFailed }

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
}

// finish sets FinishedAt and DurationMS.
func (r *Result) finish(at time.Time) {
	at = at.UTC()
	d := float64(at.Sub(r.StartedAt).Microseconds()) / 1000
	r.FinishedAt, r.DurationMS = &at, &d
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

// maxJobIDLen is the longest job id (protocol.MaxJobIDLen).
const maxJobIDLen = protocol.MaxJobIDLen

// ValidJobID reports whether id can name a job (protocol.ValidJobID): at
// most 255 letters, digits, '_', '=', '-', and single dots between them.
// Such an id is a valid key in the results bucket.
func ValidJobID(id string) bool { return protocol.ValidJobID(id) }

// autoPrefix begins the ids the controller gives jobs that came without
// one. A producer may not name a job so: see checkAutoID.
const autoPrefix = protocol.AutoJobIDPrefix

// ReservedJobID reports whether id has the form of an id the controller
// assigns (the auto- prefix), which a producer may not choose
// (protocol.ReservedJobID).
func ReservedJobID(id string) bool { return protocol.ReservedJobID(id) }

// checkAutoID accepts an auto- id that came in a header only when it names
// a job JOBS stored before this message: a replay of a job that had no id
// of its own. A producer that names its job after a later job would
// otherwise store that job's outcome before the job exists.
func checkAutoID(id string, md *jetstream.MsgMetadata) error {
	seqPart, msPart, ok := strings.Cut(strings.TrimPrefix(id, autoPrefix), "-")
	seq, err1 := strconv.ParseUint(seqPart, 10, 64)
	ms, err2 := strconv.ParseInt(msPart, 10, 64)
	switch {
	case !ok || err1 != nil || err2 != nil || autoJobID(seq, time.UnixMilli(ms)) != id:
		return fmt.Errorf("job id %q: the prefix %q is reserved for ids the controller assigns (%s<stream sequence>-<unix ms>)", id, autoPrefix, autoPrefix)
	case ms > md.Timestamp.UnixMilli() || (ms == md.Timestamp.UnixMilli() && seq >= md.Sequence.Stream):
		// Later than this job by time, or in its millisecond and not
		// before it: a job JOBS stores later. (Sequences alone do not
		// tell: after JOBS is created again an earlier job may have a
		// higher one.)
		return fmt.Errorf("job id %q: names a job JOBS has not stored yet (this job is sequence %d, stored at %d ms); the prefix %q is reserved for ids the controller assigns", id, md.Sequence.Stream, md.Timestamp.UnixMilli(), autoPrefix)
	}
	return nil
}

// autoJobID names a job that came without an id. It depends only on where
// and when the stream stored the message, so every redelivery gets the same
// id, and a stream that is deleted and created again does not reuse one.
func autoJobID(streamSeq uint64, stored time.Time) string {
	return autoPrefix + strconv.FormatUint(streamSeq, 10) + "-" + strconv.FormatInt(stored.UnixMilli(), 10)
}

// appendJSON appends the record's JSON form — the document json.Marshal
// produces (except that Output is embedded as received, not compacted),
// without reflection, since one is written for every job.
func (r *Result) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"job_id":`...)
	b = appendString(b, r.JobID)
	b = append(b, `,"algorithm":`...)
	b = appendString(b, r.Algorithm)
	b = append(b, `,"status":`...)
	b = appendString(b, string(r.Status))
	if len(r.Output) > 0 {
		b = append(b, `,"output":`...)
		b = append(b, r.Output...)
	}
	if r.OutputRef != "" {
		b = append(b, `,"output_ref":`...)
		b = appendString(b, r.OutputRef)
	}
	if r.Error != nil {
		e, err := json.Marshal(r.Error)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"error":`...)
		b = append(b, e...)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	for _, f := range [...]struct{ key, v string }{{`,"instance":`, r.Instance}, {`,"version":`, r.Version}, {`,"controller":`, r.Controller}} {
		if f.v != "" {
			b = append(b, f.key...)
			b = appendString(b, f.v)
		}
	}
	b = append(b, `,"submitted_at":`...)
	b = appendTime(b, r.SubmittedAt)
	b = append(b, `,"started_at":`...)
	b = appendTime(b, r.StartedAt)
	if r.FinishedAt != nil {
		b = append(b, `,"finished_at":`...)
		b = appendTime(b, *r.FinishedAt)
	}
	if r.DurationMS != nil {
		b = append(b, `,"duration_ms":`...)
		b = strconv.AppendFloat(b, *r.DurationMS, 'f', -1, 64)
	}
	if r.NextAttemptAt != nil {
		b = append(b, `,"next_attempt_at":`...)
		b = appendTime(b, *r.NextAttemptAt)
	}
	if r.DeadLetterSeq != 0 {
		b = append(b, `,"dead_letter_seq":`...)
		b = strconv.AppendUint(b, r.DeadLetterSeq, 10)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string, escaped as encoding/json does.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// compactJSON returns valid JSON data in compact form. Runners built on
// this module send compact JSON already, and it is returned as is, without
// a copy; whitespace between tokens (a trailing newline from a runner
// written with the nats CLI, an indented document) is removed, so stored
// records are canonical whoever wrote the output.
func compactJSON(data []byte) []byte {
	if !needsCompact(data) {
		return data
	}
	var b bytes.Buffer
	b.Grow(len(data))
	if err := json.Compact(&b, data); err != nil {
		return data
	}
	return b.Bytes()
}

// needsCompact reports whether data may hold whitespace outside strings:
// a control whitespace byte (JSON strings hold none unescaped) or a space
// outside a string.
func needsCompact(data []byte) bool {
	if bytes.ContainsAny(data, "\t\n\r") {
		return true
	}
	in := false
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case !in && c == ' ':
			return true
		}
	}
	return false
}

package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/internal/objref"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// The controller writes the result records (jobs.Result) and names the
// jobs that came without an id.

// maxJobIDLen is the longest job id (protocol.MaxJobIDLen).
const maxJobIDLen = protocol.MaxJobIDLen

// autoPrefix begins the ids the controller gives jobs that came without
// one. A producer may not name a job so: see checkAutoID.
const autoPrefix = protocol.AutoJobIDPrefix

// finish sets r.FinishedAt and r.DurationMS.
func finish(r *Result, at time.Time) {
	at = at.UTC()
	d := float64(at.Sub(r.StartedAt).Microseconds()) / 1000
	r.FinishedAt, r.DurationMS = &at, &d
}

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

// appendJSON appends r's JSON form — the document json.Marshal
// produces (except that Output and Input are embedded as received, not
// compacted), without reflection, since one is written for every job.
func appendJSON(b []byte, r *Result) ([]byte, error) {
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
	if len(r.Input) > 0 {
		b = append(b, `,"input":`...)
		b = append(b, r.Input...)
	}
	if r.InputBytes != 0 {
		b = append(b, `,"input_bytes":`...)
		b = strconv.AppendInt(b, int64(r.InputBytes), 10)
	}
	if r.TraceID != "" {
		b = append(b, `,"trace_id":`...)
		b = appendString(b, r.TraceID)
	}
	if r.Progress != nil {
		// Only running records have it: rare enough for reflection.
		p, err := json.Marshal(r.Progress)
		if err != nil {
			return nil, err
		}
		b = append(b, `,"progress":`...)
		b = append(b, p...)
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

// storeOutput moves a succeeded record's output to the outputs bucket and
// puts its reference in the record.
func storeOutput(ctx context.Context, s *jobs.Store, r *Result) error {
	if s.Outputs() == nil {
		return fmt.Errorf("controller: %w: %s", ErrNoObjectStore, OutputsBucket)
	}
	ref, err := objref.Put(ctx, s.JetStream(), OutputsBucket, r.Algorithm+"/"+r.JobID, bytes.NewReader(r.Output))
	if err != nil {
		return fmt.Errorf("controller: store output of %s: %w", r.JobID, err)
	}
	r.Output, r.OutputRef = nil, ref.String()
	return nil
}

// sawFinal keeps the job's final record when it is a cancelled one, for
// notifyCancelled.
func (t *task) sawFinal(st Status, data []byte) {
	if st == jobs.StatusCancelled {
		t.cancelled = data
	}
}

// notifyCancelled publishes the cancelled record the job was retired
// for to the job's Pnp-Notify subject: the canceller has no right to
// publish there, and the controller is the one that holds the job.
func (t *task) notifyCancelled() {
	if t.cancelled == nil {
		return
	}
	t.log().Debug().Msg("job cancelled; retired without an outcome of its own")
	if subj := t.msg.Headers().Get(HeaderNotify); subj != "" && ValidNotifySubject(subj) {
		if err := t.c.nc.Publish(subj, t.cancelled); err != nil {
			t.log().Debug().Err(err).Str("notify", subj).Msg("notification not sent")
		}
	}
}

package controller_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/jobs"
)

// TestRecordKeepsInputAndTraceID checks what a record says of the job
// itself: its input when small (also on a failed record), only its size
// when large, and the trace id of its traceparent when it had one.
func TestRecordKeepsInputAndTraceID(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "recorded", nil))
	startController(t, e, fastConfig(t))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	large := `{"n":3` + strings.Repeat(" ", jobs.MaxRecordedInput) + `}`
	for _, tc := range []struct {
		id, input string
		header    nats.Header
		status    jobs.Status
		recorded  bool
		trace     string
	}{
		{"small", `{"n":1}`, nats.Header{"traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"}}, jobs.StatusSucceeded, true, traceID},
		{"invalid", `{"n":"one"}`, nil, jobs.StatusFailed, true, ""},
		{"large", large, nil, jobs.StatusSucceeded, false, ""},
		{"bad-trace", `{"n":2}`, nats.Header{"traceparent": {"not a traceparent"}}, jobs.StatusSucceeded, true, ""},
	} {
		if _, err := e.store.Submit(context.Background(), "recorded", []byte(tc.input), controller.SubmitOptions{ID: tc.id, Header: tc.header}); err != nil {
			t.Fatal(err)
		}
		r := e.waitResult(t, tc.id)
		if r.Status != tc.status {
			t.Errorf("%s: status %s, want %s (%+v)", tc.id, r.Status, tc.status, r.Error)
		}
		if r.InputBytes != len(tc.input) {
			t.Errorf("%s: input_bytes %d, want %d", tc.id, r.InputBytes, len(tc.input))
		}
		if got := string(r.Input); tc.recorded && got != tc.input || !tc.recorded && got != "" {
			t.Errorf("%s: input %q (recorded: %v)", tc.id, got, tc.recorded)
		}
		if r.TraceID != tc.trace {
			t.Errorf("%s: trace_id %q, want %q", tc.id, r.TraceID, tc.trace)
		}
	}
}

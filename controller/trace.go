package controller

import (
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// setTrace carries the job's W3C trace context (a valid traceparent, and
// tracestate with it) into the worker's next request to a runner, or
// clears what the previous job left. None is invented for a job without
// one.
func (w *worker) setTrace(job nats.Header) {
	tp := protocol.TraceParent(job)
	if tp == "" {
		delete(w.msg.Header, protocol.HeaderTraceParent)
		delete(w.msg.Header, protocol.HeaderTraceState)
		return
	}
	w.msg.Header[protocol.HeaderTraceParent] = []string{tp}
	state := ""
	for k, v := range job {
		if len(v) > 0 && strings.EqualFold(k, protocol.HeaderTraceState) {
			state = v[0]
			break
		}
	}
	if state != "" {
		w.msg.Header[protocol.HeaderTraceState] = []string{state}
	} else {
		delete(w.msg.Header, protocol.HeaderTraceState)
	}
}

// finished records the job's final outcome in the metrics.
func (t *task) finished() {
	t.c.metrics.finished(t.alg, t.rec.Status, t.md.Timestamp)
}

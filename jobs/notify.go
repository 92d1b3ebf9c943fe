package jobs

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/protocol"
)

// ErrNotNotification reports a message on a Pnp-Notify subject that the
// controller did not send.
var ErrNotNotification = errors.New("not a notification from the controller")

// DecodeNotification parses a message received on a Pnp-Notify subject
// (notify.>): the final result record the controller published there once
// it was stored. The controller publishes the bare record, with no header
// and no reply subject, so anything else on notify.> was sent by someone
// else and fails with ErrNotNotification:
//
//   - what JetStream delivered (protocol.JetStreamDelivered): the JetStream
//     API answers into whatever reply subject its requester names, so any
//     role that may send a direct get — a runner reading obj:// inputs —
//     can have a record it wrote itself (its own discovery key, its own
//     outputs bucket) delivered on notify.<x>, with headers Nats-Stream,
//     Nats-Subject, Nats-Sequence, Nats-Time-Stamp;
//   - a message with any header or a reply subject, such as a runner's
//     answer to a request whose reply subject was notify.<x>;
//   - a body that is not a final result record (a JetStream API answer,
//     JSON of type io.nats.jetstream.api.v1.*, is not one).
//
// A notification says that a job ended; read the record from the results
// bucket (Store.Result) before acting on what it says.
func DecodeNotification(m *nats.Msg) (Result, error) {
	refuse := func(format string, args ...any) (Result, error) {
		return Result{}, fmt.Errorf("jobs: notification on %s: %w: %s", m.Subject, ErrNotNotification, fmt.Sprintf(format, args...))
	}
	if marker, ok := protocol.JetStreamDelivered(m); ok {
		return refuse("JetStream delivered it (%s)", marker)
	}
	if m.Reply != "" {
		return refuse("it has a reply subject")
	}
	for k := range m.Header {
		return refuse("it carries header %s", truncate(k, 100))
	}
	var r Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return refuse("not a result record: %v", err)
	}
	if r.JobID == "" || !r.Status.Final() {
		return refuse("not a final result record (job_id %q, status %q)", truncate(r.JobID, 100), truncate(string(r.Status), 100))
	}
	return r, nil
}

package runner

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// jetStreamHeaders are the headers the server sets on what JetStream
// itself delivers: a direct get's answer carries the first four (a batch's
// answers the next two as well, its end-of-batch message Status 204 and
// those two), a republished message the first four, a failed direct get a
// status ("Status", which nats.go makes of the status line). No client of
// the system sets any of them on a request or a notification.
var jetStreamHeaders = []string{
	"Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Time-Stamp",
	"Nats-Num-Pending", "Nats-Last-Sequence", "Nats-UpTo-Sequence",
	"Status",
}

// jetStreamReplyPrefixes are the reply subjects of JetStream's own
// deliveries (a push consumer's ack subject, flow control) and the
// namespaces of its API and buckets: answering there would acknowledge a
// delivery for whoever pointed it here, or turn the answer into a
// JetStream API call or a write to a bucket (a reply is allowed wherever
// the request says, whatever the answerer's publish permissions).
var jetStreamReplyPrefixes = []string{"$JS.", "$KV.", "$O."}

// JetStreamDelivered reports whether m came from JetStream rather than
// from a client: it carries a header only the server sets on what it
// delivers (Nats-Stream, Nats-Subject, Nats-Sequence, Nats-Time-Stamp,
// Nats-Num-Pending, Nats-Last-Sequence, Nats-UpTo-Sequence, or a status
// line), or its reply subject is in JetStream's namespaces ($JS., $KV.,
// $O.; a push consumer's deliveries carry $JS.ACK.<stream>...). The string
// names what gave it away, for logs and errors.
//
// The JetStream API answers into whatever reply subject its requester
// names, and the server does not check that subject against the
// requester's publish permissions: whoever may send a direct get (a
// runner reading obj:// inputs) can have its answers, and a batch of them,
// published on run.<algorithm> or notify.<x>. Receivers refuse such
// messages; header names are matched as the server writes them.
func JetStreamDelivered(m *nats.Msg) (string, bool) {
	if p := jetStreamReply(m.Reply); p != "" {
		return "reply subject " + p + "…", true
	}
	if len(m.Header) == 0 {
		return "", false
	}
	// A request carries a few headers of its own: look at those rather
	// than look up every marker.
	for k := range m.Header {
		if k != "Status" && !strings.HasPrefix(k, "Nats-") {
			continue
		}
		for _, j := range jetStreamHeaders {
			if k == j {
				return "header " + k, true
			}
		}
	}
	return "", false
}

// jetStreamReply returns the prefix of JetStream's namespaces reply starts
// with, or "".
func jetStreamReply(reply string) string {
	for _, p := range jetStreamReplyPrefixes {
		if strings.HasPrefix(reply, p) {
			return p
		}
	}
	return ""
}

// jsLogPeriod bounds the log lines about refused JetStream deliveries: one
// per algorithm per period (a batch direct get delivers thousands).
const jsLogPeriod = 10 * time.Second

// newJSLog is the endpoint's rate-limited logger for refused deliveries.
func newJSLog(l zerolog.Logger) zerolog.Logger {
	return l.Sample(&zerolog.BurstSampler{Burst: 1, Period: jsLogPeriod})
}

// refuseJetStream drops a request JetStream delivered, before anything
// else looks at it: no execution, no validation. It is answered 400 only
// when its reply subject is a client's (a hand-made request carrying
// JetStream's headers); a direct get's answers have no reply subject, and
// a reply into JetStream's namespaces is never sent.
func (e *endpoint) refuseJetStream(m *nats.Msg, marker string) {
	e.fromJS.Add(1)
	e.jsLog.Warn().Str("subject", m.Subject).Str("marker", marker).Int64("refused_so_far", e.fromJS.Load()).
		Msg("refused a message JetStream delivered: not a request (logged once per 10 s)")
	if m.Reply == "" || jetStreamReply(m.Reply) != "" {
		return
	}
	e.replyError(m.Reply, m.Header, time.Now(), &Error{Code: CodeInvalidInput, NotStarted: true,
		Message: "request carries " + marker + ", which only JetStream sets: a JetStream delivery is not a request"})
}

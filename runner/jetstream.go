package runner

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/protocol"
)

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
	if m.Reply == "" || protocol.JetStreamReply(m.Reply) != "" {
		return
	}
	e.replyError(m.Reply, m.Header, time.Now(), &Error{Code: CodeInvalidInput, NotStarted: true,
		Message: "request carries " + marker + ", which only JetStream sets: a JetStream delivery is not a request"})
}

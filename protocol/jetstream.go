package protocol

import (
	"strings"

	"github.com/nats-io/nats.go"
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
	if p := JetStreamReply(m.Reply); p != "" {
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

// JetStreamReply returns the prefix of JetStream's namespaces ("$JS.",
// "$KV.", "$O.") reply starts with, or "" when reply lies outside them. A
// receiver never answers into those namespaces: the answer would
// acknowledge a delivery or become a JetStream API call or a bucket write.
func JetStreamReply(reply string) string {
	for _, p := range jetStreamReplyPrefixes {
		if strings.HasPrefix(reply, p) {
			return p
		}
	}
	return ""
}

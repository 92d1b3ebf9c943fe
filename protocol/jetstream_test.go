package protocol

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// TestJetStreamDelivered checks the markers one by one.
func TestJetStreamDelivered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   *nats.Msg
		found bool
	}{
		{"plain request", &nats.Msg{Reply: "_INBOX.x"}, false},
		{"our request headers", &nats.Msg{Reply: "_INBOX_controller.x", Header: nats.Header{HeaderJobID: {"j"}, HeaderTimeout: {"1s"}, HeaderTraceParent: {"00-1-2-01"}}}, false},
		{"no reply at all", &nats.Msg{}, false},
		{"Nats-Stream", &nats.Msg{Header: nats.Header{"Nats-Stream": {"S"}}}, true},
		{"Nats-Subject", &nats.Msg{Header: nats.Header{"Nats-Subject": {"s"}}}, true},
		{"Nats-Sequence", &nats.Msg{Header: nats.Header{"Nats-Sequence": {"1"}}}, true},
		{"Nats-Time-Stamp", &nats.Msg{Header: nats.Header{"Nats-Time-Stamp": {"t"}}}, true},
		{"Nats-Num-Pending", &nats.Msg{Header: nats.Header{"Nats-Num-Pending": {"0"}}}, true},
		{"Nats-Last-Sequence", &nats.Msg{Header: nats.Header{"Nats-Last-Sequence": {"0"}}}, true},
		{"Nats-UpTo-Sequence", &nats.Msg{Header: nats.Header{"Nats-UpTo-Sequence": {"0"}}}, true},
		{"status", &nats.Msg{Header: nats.Header{"Status": {"404"}}}, true},
		{"ack reply", &nats.Msg{Reply: "$JS.ACK.S.c.1.1.1.1.0"}, true},
		{"flow control reply", &nats.Msg{Reply: "$JS.FC.S.x.y"}, true},
		{"bucket reply", &nats.Msg{Reply: "$KV.results.j"}, true},
		{"object reply", &nats.Msg{Reply: "$O.outputs.C.x"}, true},
		{"other Nats- header", &nats.Msg{Reply: "_INBOX.x", Header: nats.Header{"Nats-Msg-Id": {"x"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			marker, found := JetStreamDelivered(tc.msg)
			if found != tc.found || found == (marker == "") {
				t.Fatalf("JetStreamDelivered = %q, %v; want found=%v", marker, found, tc.found)
			}
		})
	}
}

// BenchmarkJetStreamDelivered is the check's cost on a request as the
// controller sends it (job id, time budget, trace context) and on one
// without headers, as the gateway sends most.
func BenchmarkJetStreamDelivered(b *testing.B) {
	for _, bc := range []struct {
		name string
		msg  *nats.Msg
	}{
		{"controller request", &nats.Msg{Subject: "run.x", Reply: "_INBOX_controller.abc.1", Header: nats.Header{
			HeaderJobID: {"order-17"}, HeaderTimeout: {"5s"}, HeaderTraceParent: {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}}},
		{"no headers", &nats.Msg{Subject: "run.x", Reply: "_INBOX_gateway.abc.1"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, ok := JetStreamDelivered(bc.msg); ok {
					b.Fatal("refused")
				}
			}
		})
	}
}

package controller_test

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
)

func TestDecodeNotification(t *testing.T) {
	record := []byte(`{"job_id":"order-17","algorithm":"a","status":"succeeded","output":{},"attempts":1,"submitted_at":"2026-01-01T00:00:00Z","started_at":"2026-01-01T00:00:00Z"}`)
	for _, tc := range []struct {
		name string
		msg  *nats.Msg
		ok   bool
	}{
		{"the controller's bare record", &nats.Msg{Subject: "notify.x", Data: record}, true},
		{"failed record", &nats.Msg{Subject: "notify.x", Data: []byte(`{"job_id":"j","status":"failed"}`)}, true},
		{"direct get answer", &nats.Msg{Subject: "notify.x", Data: record, Header: nats.Header{"Nats-Stream": {"KV_discovery"}, "Nats-Sequence": {"4"}}}, false},
		{"end of a batch", &nats.Msg{Subject: "notify.x", Header: nats.Header{"Status": {"204"}, "Nats-Num-Pending": {"0"}}}, false},
		{"consumer delivery", &nats.Msg{Subject: "notify.x", Data: record, Reply: "$JS.ACK.KV_discovery.c.1.1.1.1.0"}, false},
		{"a runner's answer", &nats.Msg{Subject: "notify.x", Data: record, Header: nats.Header{"Pnp-Instance": {"i"}}}, false},
		{"a reply subject", &nats.Msg{Subject: "notify.x", Data: record, Reply: "_INBOX.x"}, false},
		{"JetStream API answer", &nats.Msg{Subject: "notify.x", Data: []byte(`{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{}}`)}, false},
		{"retrying record", &nats.Msg{Subject: "notify.x", Data: []byte(`{"job_id":"j","status":"retrying"}`)}, false},
		{"no job id", &nats.Msg{Subject: "notify.x", Data: []byte(`{"status":"succeeded"}`)}, false},
		{"not JSON", &nats.Msg{Subject: "notify.x", Data: []byte(`hello`)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := controller.DecodeNotification(tc.msg)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.ok && r.JobID == "":
				t.Fatal("accepted without a job id")
			case !tc.ok && !errors.Is(err, controller.ErrNotNotification):
				t.Fatalf("want ErrNotNotification, got %v", err)
			}
		})
	}
}

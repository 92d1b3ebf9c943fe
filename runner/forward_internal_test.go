package runner

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
)

// A request for another version (Pnp-Version) that arrives before the
// live instances are read waits for that read on its own goroutine, not on
// the subscription's: the plain requests behind it are not held up, and it
// is answered once the read says whether the version is live.
func TestForwardDoesNotBlockBeforeLiveRead(t *testing.T) {
	srv := natstest.Start(t)
	nc := srv.Connect()
	defer nc.Close()
	cache := newLiveView(nc, []string{"alg"}, "", zerolog.Nop())
	e := &endpoint{
		alg:      &Algorithm{spec: Spec{Name: "alg", Version: "1.0.0"}},
		nc:       nc,
		cache:    cache,
		limit:    4,
		idle:     make(chan struct{}),
		instance: "i1",
		log:      zerolog.Nop(),
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: e.alg.Subject(), Reply: inbox, Header: nats.Header{protocol.HeaderVersionWanted: []string{"2.0.0"}}}
	returned := make(chan bool, 1)
	go func() { returned <- e.forward(m, cache) }()
	select {
	case took := <-returned:
		if !took {
			t.Fatal("forward did not take a request for another version")
		}
	case <-time.After(routesWait * 3 / 4):
		t.Fatal("forward holds the subscription's goroutine until the live instances are read")
	}
	// The read finds no instance of 2.0.0: the request is answered so.
	cache.markReady()
	reply, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rerr := protocol.ReplyError(reply)
	if rerr == nil || rerr.Code != CodeNotFound {
		t.Fatalf("reply %v %s: want %d not live", reply.Header, reply.Data, CodeNotFound)
	}
}

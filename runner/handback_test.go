package runner_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/runner"
)

// HandBack answers the newest waiting jobs with a not-started 503 and
// leaves alone what runs, the older jobs and requests without a job id:
// those are served. Handing back is routine (scaling down), so it logs
// nothing at warn level.
func TestHandBackNewestWaitingJobs(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect()
	var logs syncBuffer
	r, _ := start(t, nc, []*runner.Algorithm{wordCount(t, func(s *runner.Spec) { s.MaxConcurrency = 1; s.MaxPending = 8 })},
		runner.WithLogger(zerolog.New(&logs).Level(zerolog.WarnLevel)))
	waiting := func() int {
		for _, l := range r.Load() {
			if l.Algorithm == "word_count" {
				return l.Waiting
			}
		}
		return -1
	}
	if n := r.HandBack("word_count", 5); n != 0 {
		t.Fatalf("HandBack with nothing waiting = %d, want 0", n)
	}

	// One request runs; behind it wait, in this order, job a, a plain
	// request, job b and job c.
	sends := []struct{ name, job string }{{"running", "j-run"}, {"a", "j-a"}, {"plain", ""}, {"b", "j-b"}, {"c", "j-c"}}
	replies := make([]chan *nats.Msg, len(sends))
	for i, send := range sends {
		replies[i] = make(chan *nats.Msg, 1)
		hdr := nats.Header{}
		if send.job != "" {
			hdr.Set(protocol.HeaderJobID, send.job)
		}
		ms := 50
		if i == 0 {
			ms = 1500
		}
		go func() {
			m, err := nc.RequestMsg(&nats.Msg{Subject: "run.word_count", Data: fmt.Appendf(nil, `{"text":%q,"sleep_ms":%d}`, send.name, ms), Header: hdr}, 20*time.Second)
			if err != nil {
				t.Errorf("request %s: %v", send.name, err)
			}
			replies[i] <- m
		}()
		natstest.Eventually(t, 10*time.Second, func() bool { return waiting() == i }, "request %s not admitted", send.name)
	}
	if n := r.HandBack("other", 2); n != 0 {
		t.Errorf("HandBack of an algorithm not served = %d, want 0", n)
	}
	if n := r.HandBack("word_count", 2); n != 2 {
		t.Fatalf("HandBack = %d, want 2", n)
	}
	if w := waiting(); w != 2 {
		t.Errorf("%d waiting after the hand-back, want 2", w)
	}
	for i, send := range sends {
		m := <-replies[i]
		if m == nil {
			continue
		}
		rerr := protocol.ReplyError(m)
		switch send.name {
		case "b", "c":
			if rerr == nil || rerr.Code != protocol.CodeUnavailable || !rerr.NotStarted || !strings.Contains(rerr.Message, "handed back") {
				t.Errorf("%s: %v, want a not-started 503 handing it back", send.name, rerr)
			}
		default:
			if rerr != nil || !strings.Contains(string(m.Data), `"words":1`) {
				t.Errorf("%s: %v %s, want it served", send.name, rerr, m.Data)
			}
		}
	}
	for _, l := range r.Load() {
		if l.Waiting != 0 || l.InFlight != 0 {
			t.Errorf("load after all replies: %+v", l)
		}
	}
	for _, l := range logs.lines(t) {
		t.Errorf("logged at %v: %v", l["level"], l)
	}
}

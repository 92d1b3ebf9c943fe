package controller_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pnpworker/pnpworker/controller"
	"github.com/pnpworker/pnpworker/discovery"
	"github.com/pnpworker/pnpworker/protocol"
)

// refuser answers every request on run.<alg> in the runners' queue group
// with code and Pnp-Not-Started, as a runner does that could not start a
// request (overloaded, draining, or its budget spent in the queue); it
// has a record, so the controller pulls the algorithm's jobs.
func refuser(t *testing.T, e *env, alg string, code int) *atomic.Int64 {
	t.Helper()
	putRecord(t, e, alg, "refuser")
	nc := e.srv.Connect()
	t.Cleanup(nc.Close)
	var calls atomic.Int64
	_, err := nc.QueueSubscribe(discovery.RequestSubject(alg), "runners", func(m *nats.Msg) {
		calls.Add(1)
		reply := &nats.Msg{Subject: m.Reply, Data: []byte(`{}`), Header: nats.Header{}}
		reply.Header.Set(protocol.HeaderErrorCode, strconv.Itoa(code))
		reply.Header.Set(protocol.HeaderError, fmt.Sprintf("refused before starting (%d)", code))
		reply.Header.Set(protocol.HeaderNotStarted, "true")
		_ = nc.PublishMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &calls
}

// Defect 14 of issue 17: a job whose own budget cannot suffice ended only
// after about 50 minutes (Pnp-Timeout: 1ns was handed back up to 100
// times with growing waits). A budget shorter than controller.MinJobTimeout
// fails at once with 504, without a runner call; a runner refusing a job
// because the job's own budget (shorter than the algorithm's) ran out in
// its queue has used an attempt, so the job fails after MaxAttempts. Here
// refusals of the second kind would, as back-pressure, take 1000
// deliveries.
func TestOwnBudgetTooShortEndsPromptlyReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	var calls atomic.Int64
	startRunner(t, e.srv, echo(t, "budget", &calls))
	refusals := refuser(t, e, "refused", protocol.CodeDeadline)
	cfg := fastConfig(t)
	cfg.MaxAttempts = 3
	cfg.MaxNotStarted = 1000
	startController(t, e, cfg)

	for _, tc := range []struct {
		name, alg, timeout string
		attempts           int
		calls              func() int64
		reason             string
	}{
		{"1ns", "budget", "1ns", 0, calls.Load, "ran out before it could start"},
		{"under a millisecond", "budget", "999us", 0, calls.Load, "ran out before it could start"},
		{"refused in the runners queue", "refused", "50ms", cfg.MaxAttempts, refusals.Load, "ran out before a runner started it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "own-" + strings.ReplaceAll(tc.name, " ", "-")
			before := tc.calls()
			e.publish(t, tc.alg, id, []byte(`{"n":1}`), nats.Header{controller.HeaderTimeout: []string{tc.timeout}})
			r := e.waitFinal(t, id, 30*time.Second)
			d, err := time.ParseDuration(tc.timeout)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != controller.StatusFailed || r.Error == nil || r.Error.Code != protocol.CodeDeadline ||
				!strings.Contains(r.Error.Message, tc.reason) || !strings.Contains(r.Error.Message, d.String()) {
				t.Fatalf("%s: %s %+v, want failed with 504 saying the job's own budget (%s) %s", id, r.Status, r.Error, tc.timeout, tc.reason)
			}
			if r.Attempts != tc.attempts {
				t.Errorf("%s: %d attempts, want %d", id, r.Attempts, tc.attempts)
			}
			if got := tc.calls() - before; got != int64(tc.attempts) {
				t.Errorf("%s: the runner was called %d times, want %d", id, got, tc.attempts)
			}
			if r.DeadLetterSeq == 0 {
				t.Errorf("%s: no dead letter", id)
			}
		})
	}
}

package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"pnpworker/controller"
	"pnpworker/internal/natstest"
)

// Defect class: a job whose subject names no possible algorithm. A
// producer publishing to jobs.<name> with a name no runner can register
// (upper case, or thousands of characters) made a job no puller ever
// takes; once the sweep expired it, its dead letter on dead.<name> was
// longer than the control line the server takes, and the server closed
// the controller's connection for good (Run returned): one message in
// JOBS stopped every controller at its first sweep, after every restart.
// Such a job now fails at the next sweep, whatever its age, with 400 and a
// dead letter on dead._invalid, and the controller keeps running.
func TestJobsOfInvalidAlgorithmNamesEndReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	long := "x" + strings.Repeat("y", 4070)
	ids := map[string]string{"inv-upper": "Upper", "inv-long": long}
	for id, alg := range ids {
		msg := &nats.Msg{Subject: controller.JobsSubjectPrefix + alg, Data: []byte(`{"n":1}`),
			Header: nats.Header{controller.HeaderJobID: []string{id}}}
		// A core publish, as `nats pub` does: JOBS stores it.
		if err := e.nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() bool { return e.jobsLeft(t) == 2 }, "JOBS did not store the jobs")

	cfg := fastConfig(t)
	// Short, so that on the code before the sweep reached these jobs too.
	cfg.MaxJobAge = 2 * time.Second
	h := startController(t, e, cfg)
	var disconnects int
	natstest.Eventually(t, 20*time.Second, func() bool {
		select {
		case <-h.done:
			return true
		default:
		}
		if !h.nc.IsConnected() {
			disconnects++
		}
		return e.jobsLeft(t) == 0
	}, "the jobs are still in JOBS")
	select {
	case <-h.done:
		t.Fatalf("the controller stopped: %v", h.runErr)
	default:
	}
	if disconnects > 0 || h.nc.Stats().Reconnects > 0 {
		t.Errorf("the controller's connection dropped (seen down %d times, %d reconnects)", disconnects, h.nc.Stats().Reconnects)
	}
	dead := e.deadOf(t, controller.DeadInvalidAlgorithm)
	for id := range ids {
		d := dead[id]
		if len(d) != 1 || d[0].Code != 400 || !strings.Contains(d[0].Reason, "not a valid algorithm name") {
			t.Errorf("%s: dead letters %+v; want one, 400, not a valid algorithm name", id, d)
		}
	}
}

// Defect class: jobs that wait forever, at the seam of the expiry sweep and
// MaxAlgorithms. The sweep skipped every algorithm with a live runner,
// taking it as served; but a controller at MaxAlgorithms pulls none of the
// algorithms past the bound, so their jobs were neither pulled nor swept
// and never expired. The sweep now skips only the algorithms this
// controller pulls.
func TestJobsOfAlgorithmsPastMaxAlgorithmsExpireReliability(t *testing.T) {
	e := newEnv(t, controller.StoreConfig{})
	startRunner(t, e.srv, echo(t, "aaa", nil), echo(t, "zzz", nil))
	cfg := fastConfig(t)
	cfg.MaxAlgorithms = 1 // serves aaa, the first by name
	cfg.MaxJobAge = 2 * time.Second
	startController(t, e, cfg)
	e.submit(t, "aaa", "cap-served", echoIn{N: 1})
	if r := e.waitFinal(t, "cap-served", 20*time.Second); r.Status != controller.StatusSucceeded {
		t.Fatalf("cap-served: %s %+v", r.Status, r.Error)
	}
	e.submit(t, "zzz", "cap-unserved", echoIn{N: 1})
	r := e.waitFinal(t, "cap-unserved", 20*time.Second)
	if r.Status != controller.StatusFailed || r.Error == nil || !strings.Contains(r.Error.Message, "expired") || r.DeadLetterSeq == 0 {
		t.Errorf("cap-unserved: %s %+v dead letter %d; want failed as expired, dead-lettered", r.Status, r.Error, r.DeadLetterSeq)
	}
}

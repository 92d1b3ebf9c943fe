package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pnpworker/pnpworker/jobs"
)

// A job refused by a queue limit (here the algorithm's own, one job) is a
// 503 whose problem names the subject and the limit, not "JetStream
// unavailable"; another algorithm's job is still accepted.
func TestFullAlgorithmQueueIsNamed(t *testing.T) {
	s := newStack(t, stackOpts{})
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := jobs.Provision(ctx, js, jobs.StoreConfig{JobsMaxPerAlgorithm: 1}); err != nil {
		t.Fatal(err)
	}
	// The first probe job sleeps: it stays in JOBS until it is done.
	if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{"sleep_ms":20000}`, nil); r.StatusCode != 202 {
		t.Fatalf("first job: status %d: %s", r.StatusCode, r.body)
	}
	p := expectProblem(t, s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, nil), 503)
	if !strings.Contains(p.Message, "jobs.probe: per-algorithm queue full (1 job waiting in stream JOBS") {
		t.Fatalf("problem message %q does not name the algorithm's limit", p.Message)
	}
	if r := s.do(t, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"Guten Morgen, wie geht es dir heute?"}`, nil); r.StatusCode != 202 {
		t.Fatalf("another algorithm's job: status %d: %s", r.StatusCode, r.body)
	}
}

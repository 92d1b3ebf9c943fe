package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A job's priority picks its subject and is kept in its headers, so that
// a replay of its dead letter queues it where it was.
func TestPrioritySubjectsAndReplay(t *testing.T) {
	s := provision(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		p       Priority
		subject string
	}{{"", "jobs.a"}, {PriorityNormal, "jobs.a"}, {PriorityHigh, "jobs.a.high"}, {PriorityLow, "jobs.a.low"}} {
		sub, err := s.Submit(ctx, "a", []byte(`{}`), SubmitOptions{Priority: tc.p})
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Jobs().GetMsg(ctx, sub.Seq)
		if err != nil {
			t.Fatal(err)
		}
		if alg, p := SubjectAlgorithm(m.Subject); m.Subject != tc.subject || alg != "a" || (tc.p != "" && p != tc.p) {
			t.Errorf("priority %q: subject %s (%s, %s), want %s", tc.p, m.Subject, alg, p, tc.subject)
		}
	}
	if _, err := s.Submit(ctx, "a", []byte(`{}`), SubmitOptions{Priority: "urgent"}); err == nil {
		t.Error("priority urgent accepted")
	}
	// A dead letter of a high job, as the controller writes it.
	h := nats.Header{}
	h.Set(HeaderJobID, "d1")
	h.Set(HeaderPriority, "high")
	if _, err := s.JetStream().PublishMsg(ctx, &nats.Msg{Subject: DeadSubjectPrefix + "a", Header: h, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	out, err := s.ReplayDead(ctx, "a", []string{"d1"})
	if err != nil || len(out) != 1 || out[0].Err != nil {
		t.Fatalf("replay: %+v, %v", out, err)
	}
	m, err := s.Jobs().GetMsg(ctx, out[0].Submission.Seq)
	if err != nil || m.Subject != "jobs.a.high" {
		t.Errorf("replayed job on %v (%v), want jobs.a.high", m, err)
	}
}

// ConsumerQueue reads back what PriorityConsumerName names, and only that.
func TestConsumerQueue(t *testing.T) {
	for _, alg := range []string{"a", "image_info"} {
		for _, p := range Priorities {
			name := PriorityConsumerName(alg, p)
			if gotAlg, gotP, ok := ConsumerQueue(name); !ok || gotAlg != alg || gotP != p {
				t.Errorf("ConsumerQueue(%q) = %q, %q, %v; want %q, %q", name, gotAlg, gotP, ok, alg, p)
			}
		}
	}
	for _, name := range []string{"", "controller_", "other_a", "controller_-high", "controller_a-urgent", "controller_A"} {
		if alg, p, ok := ConsumerQueue(name); ok {
			t.Errorf("ConsumerQueue(%q) = %q, %q, true; want false", name, alg, p)
		}
	}
}

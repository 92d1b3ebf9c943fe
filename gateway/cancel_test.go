package gateway_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/runner"
)

// cancelProblem is the problem body of DELETE /v1/jobs/{id} and of a job
// for an unknown algorithm.
type cancelProblem struct {
	JobStatus   string   `json:"job_status"`
	Suggestions []string `json:"suggestions"`
}

func TestCancelOverHTTP(t *testing.T) {
	s := newStack(t, stackOpts{})
	// Running: the probe sleeps for its whole budget unless cancelled.
	if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{"sleep_ms":2800}`, map[string]string{"Idempotency-Key": "to-cancel"}); r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	r := s.do(t, "DELETE", "/v1/jobs/to-cancel", "", nil)
	if r.StatusCode != 200 {
		t.Fatalf("cancel: %d %s", r.StatusCode, r.body)
	}
	var rec jobs.Result
	mustJSON(t, r.body, &rec)
	if rec.Status != jobs.StatusCancelled || rec.JobID != "to-cancel" || rec.Algorithm != "probe" {
		t.Fatalf("cancel answered %s", r.body)
	}
	r = s.do(t, "GET", "/v1/jobs/to-cancel?wait=5s", "", nil)
	mustJSON(t, r.body, &rec)
	if r.StatusCode != 200 || rec.Status != jobs.StatusCancelled {
		t.Fatalf("GET after cancel: %d %s", r.StatusCode, r.body)
	}
	// Cancelled already, succeeded, unknown, invalid.
	var p cancelProblem
	mustJSON(t, expectProblem(t, s.do(t, "DELETE", "/v1/jobs/to-cancel", "", nil), 409).raw, &p)
	if p.JobStatus != "cancelled" {
		t.Fatalf("second cancel: job_status %q", p.JobStatus)
	}
	if r := s.do(t, "POST", "/v1/algorithms/probe/jobs", `{}`, map[string]string{"Idempotency-Key": "quick"}); r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	if r := s.do(t, "GET", "/v1/jobs/quick?wait=20s", "", nil); r.StatusCode != 200 || !strings.Contains(string(r.body), `"succeeded"`) {
		t.Fatalf("quick job: %d %s", r.StatusCode, r.body)
	}
	mustJSON(t, expectProblem(t, s.do(t, "DELETE", "/v1/jobs/quick", "", nil), 409).raw, &p)
	if p.JobStatus != "succeeded" {
		t.Fatalf("cancel of a succeeded job: job_status %q", p.JobStatus)
	}
	expectProblem(t, s.do(t, "DELETE", "/v1/jobs/never-there", "", nil), 404)
	expectProblem(t, s.do(t, "DELETE", "/v1/jobs/a..b", "", nil), 400)
}

func TestUnknownAlgorithmRefused(t *testing.T) {
	s := newStack(t, stackOpts{})
	for _, tc := range []struct{ name, want string }{
		{"prob", "probe"},
		{"languagedetection", "language_detection"},
		{"language_detecton", "language_detection"},
	} {
		var p cancelProblem
		pb := expectProblem(t, s.do(t, "POST", "/v1/algorithms/"+tc.name+"/jobs", `{}`, nil), 404)
		mustJSON(t, pb.raw, &p)
		if !slices.Contains(p.Suggestions, tc.want) || !strings.Contains(pb.Message, "did you mean "+tc.want) {
			t.Errorf("%s: suggestions %v, message %q; want %s", tc.name, p.Suggestions, pb.Message, tc.want)
		}
	}
	pb := expectProblem(t, s.do(t, "POST", "/v1/algorithms/zzzzzzzz/jobs", `{}`, nil), 404)
	if strings.Contains(pb.Message, "did you mean") {
		t.Errorf("a name close to nothing got suggestions: %s", pb.Message)
	}
	// Declared: accepted before any runner exists.
	if err := s.store.Declare(context.Background(), "scaled_from_zero"); err != nil {
		t.Fatal(err)
	}
	if r := s.do(t, "POST", "/v1/algorithms/scaled_from_zero/jobs", `{}`, nil); r.StatusCode != 202 {
		t.Fatalf("declared algorithm: %d %s", r.StatusCode, r.body)
	}
	// Registered once, its runners gone now: still accepted.
	a, err := runner.NewAlgorithm(runner.Spec{Name: "transient", Version: "1.0.0", InputSchema: []byte(`{}`), OutputSchema: []byte(`{}`)},
		func(context.Context, map[string]any) (map[string]any, error) { return map[string]any{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	stop := s.startRunner(t, a)
	natstest.Eventually(t, 10*time.Second, func() bool {
		_, err := s.store.Served().Get(context.Background(), "transient")
		return err == nil
	}, "transient marked as served")
	stop()
	s.waitAlgorithms(t, 2)
	if r := s.do(t, "POST", "/v1/algorithms/transient/jobs", `{}`, nil); r.StatusCode != 202 {
		t.Fatalf("algorithm whose runners are down: %d %s", r.StatusCode, r.body)
	}
}

package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/gateway"
	"github.com/pnpworker/pnpworker/runner"
)

// A running job's progress shows in GET /v1/jobs/{id} (which ?wait= does
// not take for the outcome), in the listing
// with status=running, and in its job event; the OpenAPI document has
// the shapes.
func TestProgressOverHTTP(t *testing.T) {
	s := newStack(t, stackOpts{})
	ev := s.openEvents(t)
	release := make(chan struct{})
	s.startRunner(t, runner.Must(runner.NewAlgorithm(runner.Spec{
		Name: "stepwise", Version: "0.1.0", InputSchema: []byte(`{}`), OutputSchema: []byte(`{}`), Timeout: 30 * time.Second,
	}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		if err := runner.Progress(ctx, 0.4, "resizing <tiles>"); err != nil {
			return struct{}{}, err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return struct{}{}, ctx.Err()
	})))
	defer close(release)
	r := s.do(t, "POST", "/v1/algorithms/stepwise/jobs", `{}`, map[string]string{"Idempotency-Key": "stepping"})
	if r.StatusCode != 202 {
		t.Fatalf("submit: %d %s", r.StatusCode, r.body)
	}
	e := ev.next(t, func(e sseEvent) bool {
		return e.name == gateway.EventJob && strings.Contains(e.data, `"job_id":"stepping"`)
	}, "job stepping running")
	var je struct {
		Status   string `json:"status"`
		Progress *struct {
			Fraction float64 `json:"fraction"`
			Message  string  `json:"message"`
		} `json:"progress"`
	}
	mustJSON(t, []byte(e.data), &je)
	if je.Status != "running" || je.Progress == nil || je.Progress.Fraction != 0.4 || je.Progress.Message != "resizing <tiles>" {
		t.Fatalf("job event %s", e.data)
	}
	got := s.do(t, "GET", "/v1/jobs/stepping", "", nil)
	if got.StatusCode != 200 || !strings.Contains(string(got.body), `"status":"running"`) || !strings.Contains(string(got.body), `"fraction":0.4`) {
		t.Fatalf("GET /v1/jobs/stepping: %d %s", got.StatusCode, got.body)
	}
	// ?wait= waits for the outcome, not for a running record, and then
	// answers with what there is.
	start := time.Now()
	waited := s.do(t, "GET", "/v1/jobs/stepping?wait=1s", "", nil)
	if waited.StatusCode != 200 || !strings.Contains(string(waited.body), `"status":"running"`) || time.Since(start) < time.Second {
		t.Fatalf("GET /v1/jobs/stepping?wait=1s: %d after %s: %s", waited.StatusCode, time.Since(start), waited.body)
	}
	list := s.do(t, "GET", "/v1/jobs?status=running", "", nil)
	if list.StatusCode != 200 || !strings.Contains(string(list.body), `"job_id":"stepping"`) || !strings.Contains(string(list.body), `"fraction":0.4`) {
		t.Fatalf("GET /v1/jobs?status=running: %d %s", list.StatusCode, list.body)
	}
	doc := s.do(t, "GET", "/openapi.json", "", nil)
	for _, want := range []string{`"Progress"`, `"JobEvent"`, `"running"`} {
		if !strings.Contains(string(doc.body), want) {
			t.Fatalf("OpenAPI document lacks %s", want)
		}
	}
}

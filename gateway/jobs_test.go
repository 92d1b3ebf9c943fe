package gateway_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/jobs"
)

// GET /v1/jobs lists the jobs the pipeline ran, newest first, filtered
// and paged; bad parameters are 400 problems that name them.
func TestListJobsOverHTTP(t *testing.T) {
	s := newStack(t, stackOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	tp := "00-" + traceID + "-00f067aa0ba902b7-01"
	var ids []string
	for i := range 6 {
		body := `{}`
		if i%3 == 2 {
			body = `{"code":422}`
		}
		r := s.do(t, "POST", "/v1/algorithms/probe/jobs", body, map[string]string{"Idempotency-Key": fmt.Sprintf("list-%d", i), "traceparent": tp})
		if r.StatusCode != 202 {
			t.Fatalf("submit: %d %s", r.StatusCode, r.body)
		}
		// One at a time, so the records are written in this order.
		if _, err := s.store.WaitResult(ctx, fmt.Sprintf("list-%d", i), nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, fmt.Sprintf("list-%d", i))
	}
	list := func(q string) jobs.JobPage {
		t.Helper()
		r := s.do(t, "GET", "/v1/jobs"+q, "", nil)
		if r.StatusCode != 200 {
			t.Fatalf("GET /v1/jobs%s: %d %s", q, r.StatusCode, r.body)
		}
		var p jobs.JobPage
		mustJSON(t, r.body, &p)
		return p
	}
	idsOf := func(p jobs.JobPage) string {
		var out []string
		for _, r := range p.Jobs {
			out = append(out, r.JobID)
		}
		return strings.Join(out, ",")
	}
	if got := idsOf(list("")); got != "list-5,list-4,list-3,list-2,list-1,list-0" {
		t.Errorf("all jobs: %s", got)
	}
	// A listed record comes without its output and input; the job's own
	// record has them, and the trace id of the job's traceparent.
	if p := list("?limit=1"); len(p.Jobs) != 1 || p.Jobs[0].Output != nil || p.Jobs[0].Input != nil || p.Jobs[0].TraceID != traceID || p.Jobs[0].InputBytes != len(`{"code":422}`) {
		t.Errorf("listed record: %+v", p.Jobs)
	}
	var rec jobs.Result
	mustJSON(t, s.do(t, "GET", "/v1/jobs/list-4", "", nil).body, &rec)
	if string(rec.Input) != `{}` || rec.TraceID != traceID || rec.Output == nil {
		t.Errorf("record of list-4: %+v", rec)
	}
	if got := idsOf(list("?status=failed&algorithm=probe")); got != "list-5,list-2" {
		t.Errorf("failed jobs: %s", got)
	}
	p := list("?limit=4")
	if idsOf(p) != "list-5,list-4,list-3,list-2" || p.Next == "" {
		t.Fatalf("first page: %s next %q", idsOf(p), p.Next)
	}
	if got := idsOf(list("?limit=4&cursor=" + url.QueryEscape(p.Next))); got != "list-1,list-0" {
		t.Errorf("second page: %s", got)
	}
	if got := idsOf(list("?since=" + url.QueryEscape(time.Now().Add(time.Minute).UTC().Format(time.RFC3339)))); got != "" {
		t.Errorf("since the future: %s", got)
	}
	if got := idsOf(list("?since=1h&algorithm=language_detection")); got != "" {
		t.Errorf("another algorithm: %s", got)
	}
	for q, want := range map[string]string{
		"?status=done":             "query parameter status",
		"?algorithm=No":            "query parameter algorithm",
		"?limit=0":                 "query parameter limit",
		"?limit=ten":               "query parameter limit",
		"?limit=5000":              "query parameter limit",
		"?since=yesterday":         "query parameter since",
		"?cursor=xyz":              "query parameter cursor",
		"?state=failed":            "query parameter state: unknown parameter",
		"?status=failed&status=ok": "query parameter status: given more than once",
	} {
		pr := expectProblem(t, s.do(t, "GET", "/v1/jobs"+q, "", nil), 400)
		if !strings.Contains(pr.Message, want) {
			t.Errorf("%s: %q; want it to name %q", q, pr.Message, want)
		}
	}
}

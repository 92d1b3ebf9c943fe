package gateway_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pnpworker/pnpworker/internal/natstest"
	"github.com/pnpworker/pnpworker/jobs"
)

// Pnp-Not-Before delays a job: 202 with not_before, GET answers status
// scheduled until then, and the job succeeds after it.
func TestDelayedJobOverHTTP(t *testing.T) {
	s := newStack(t, stackOpts{})
	at := time.Now().Add(2 * time.Second).UTC()
	r := s.do(t, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"Guten Morgen, wie geht es dir heute?"}`,
		map[string]string{"Idempotency-Key": "http-later", "Pnp-Not-Before": at.Format(time.RFC3339Nano)})
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %s", r.StatusCode, r.body)
	}
	var acc struct {
		JobID     string     `json:"job_id"`
		NotBefore *time.Time `json:"not_before"`
	}
	mustJSON(t, r.body, &acc)
	if acc.JobID != "http-later" || acc.NotBefore == nil || acc.NotBefore.Before(at) {
		t.Fatalf("accepted %s, want not_before at or after %s", r.body, at)
	}
	r = s.do(t, "GET", "/v1/jobs/http-later", "", nil)
	var res jobs.Result
	mustJSON(t, r.body, &res)
	if r.StatusCode != http.StatusOK || res.Status != jobs.StatusScheduled || !res.NotBefore.Equal(*acc.NotBefore) {
		t.Fatalf("GET before its time: %d %s", r.StatusCode, r.body)
	}
	r = s.do(t, "GET", "/v1/jobs/http-later?wait=30s", "", nil)
	mustJSON(t, r.body, &res)
	if res.Status != jobs.StatusSucceeded || res.StartedAt.Before(*acc.NotBefore) {
		t.Fatalf("GET ?wait: %s", r.body)
	}

	r = s.do(t, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"Guten Morgen, wie geht es dir heute?"}`,
		map[string]string{"Idempotency-Key": "http-high", "Pnp-Priority": "high"})
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("Pnp-Priority high: %d %s", r.StatusCode, r.body)
	}
	mustJSON(t, s.do(t, "GET", "/v1/jobs/http-high?wait=30s", "", nil).body, &res)
	if res.Status != jobs.StatusSucceeded {
		t.Errorf("high job: %+v", res)
	}
	if p := expectProblem(t, s.do(t, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"x"}`, map[string]string{"Pnp-Priority": "urgent"}), http.StatusBadRequest); !strings.Contains(p.Message, "Pnp-Priority") {
		t.Errorf("Pnp-Priority urgent: %s", p.Message)
	}
	for _, v := range []string{"tomorrow", "2026-12-24 18:00"} {
		p := expectProblem(t, s.do(t, "POST", "/v1/algorithms/language_detection/jobs", `{"text":"x"}`, map[string]string{"Pnp-Not-Before": v}), http.StatusBadRequest)
		if !strings.Contains(p.Message, "Pnp-Not-Before") {
			t.Errorf("Pnp-Not-Before %q: %s", v, p.Message)
		}
	}
}

// POST, GET and DELETE /v1/schedules: a schedule's runs are jobs named
// after it; bad schedules are refused naming the field.
func TestSchedulesOverHTTP(t *testing.T) {
	s := newStack(t, stackOpts{})
	r := s.do(t, "POST", "/v1/schedules", `{"name":"hourly-probe","algorithm":"language_detection","every":"1s","input":{"text":"Guten Morgen, wie geht es dir heute?"}}`, nil)
	if r.StatusCode != http.StatusCreated || r.Header.Get("Location") != "/v1/schedules/hourly-probe" {
		t.Fatalf("POST: %d %s", r.StatusCode, r.body)
	}
	r = s.do(t, "POST", "/v1/schedules", `{"name":"nightly","algorithm":"language_detection","cron":"@daily","input":{"text":"bonjour"},"timeout":"5s"}`, nil)
	if r.StatusCode != http.StatusCreated {
		t.Fatalf("POST cron: %d %s", r.StatusCode, r.body)
	}
	var list []struct {
		Name    string    `json:"name"`
		Every   string    `json:"every"`
		Cron    string    `json:"cron"`
		Timeout string    `json:"timeout"`
		NextRun time.Time `json:"next_run"`
	}
	mustJSON(t, s.do(t, "GET", "/v1/schedules", "", nil).body, &list)
	midnight := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	if len(list) != 2 || list[0].Name != "hourly-probe" || list[0].Every != "1s" ||
		list[1].Cron != "@daily" || list[1].Timeout != "5s" || !list[1].NextRun.Equal(midnight) {
		t.Fatalf("GET: %+v, want the two, nightly next at %s", list, midnight)
	}

	runID := regexp.MustCompile(`^hourly-probe-\d{8}T\d{6}Z$`)
	var run string
	natstest.Eventually(t, 30*time.Second, func() bool {
		keys, err := s.store.Results().Keys(t.Context())
		if err != nil {
			return false
		}
		for _, k := range keys {
			if runID.MatchString(k) {
				run = k
				return true
			}
		}
		return false
	}, "no run of the schedule")
	var res jobs.Result
	mustJSON(t, s.do(t, "GET", "/v1/jobs/"+run+"?wait=30s", "", nil).body, &res)
	if res.Status != jobs.StatusSucceeded {
		t.Errorf("run %s: %+v", run, res)
	}

	for _, name := range []string{"hourly-probe", "nightly"} {
		if r := s.do(t, "DELETE", "/v1/schedules/"+name, "", nil); r.StatusCode != http.StatusNoContent {
			t.Errorf("DELETE %s: %d %s", name, r.StatusCode, r.body)
		}
	}
	expectProblem(t, s.do(t, "DELETE", "/v1/schedules/nightly", "", nil), http.StatusNotFound)
	if b := s.do(t, "GET", "/v1/schedules", "", nil).body; strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("GET after DELETE: %s", b)
	}

	for name, tc := range map[string]struct{ body, want string }{
		"not JSON":      {`{`, "not a schedule"},
		"unknown field": {`{"name":"a","algorithm":"x","every":"1m","input":{},"extra":1}`, `unknown field "extra"`},
		"neither":       {`{"name":"a","algorithm":"language_detection","input":{}}`, "every or cron: give one"},
		"both":          {`{"name":"a","algorithm":"language_detection","every":"1m","cron":"@daily","input":{}}`, "give one, not both"},
		"bad every":     {`{"name":"a","algorithm":"language_detection","every":"soon","input":{}}`, `every "soon": not a duration`},
		"bad cron":      {`{"name":"a","algorithm":"language_detection","cron":"61 * * * * *","input":{}}`, `cron "61 * * * * *"`},
		"bad name":      {`{"name":"a b","algorithm":"language_detection","every":"1m","input":{}}`, `name "a b"`},
		"no input":      {`{"name":"a","algorithm":"language_detection","every":"1m"}`, "input: not valid JSON"},
		"many at once":  {`{"name":"","algorithm":"","every":"1m","input":{}}`, `name ""`},
	} {
		t.Run(name, func(t *testing.T) {
			p := expectProblem(t, s.do(t, "POST", "/v1/schedules", tc.body, nil), http.StatusBadRequest)
			if !strings.Contains(p.Message, tc.want) {
				t.Errorf("message %q, want %q", p.Message, tc.want)
			}
		})
	}
	r = s.do(t, "PUT", "/v1/schedules/x", "", nil)
	if r.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(r.Header.Get("Allow"), "DELETE") {
		t.Errorf("PUT: %d Allow %q", r.StatusCode, r.Header.Get("Allow"))
	}
}

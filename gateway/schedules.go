package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pnpworker/pnpworker/jobs"
)

// priorityHeader parses the optional Pnp-Priority request header of a job
// submission: high, normal or low.
func priorityHeader(r *http.Request) (jobs.Priority, error) {
	p, err := jobs.ParsePriority(r.Header.Get(jobs.HeaderPriority))
	if err != nil {
		return "", fmt.Errorf("header %s: %w", jobs.HeaderPriority, err)
	}
	return p, nil
}

// notBeforeHeader parses the optional Pnp-Not-Before request header of a
// job submission: an RFC 3339 time.
func notBeforeHeader(r *http.Request) (time.Time, error) {
	v := r.Header.Get(jobs.HeaderNotBefore)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("header %s: %q is not an RFC 3339 time such as 2026-12-24T18:00:00Z", jobs.HeaderNotBefore, v)
	}
	return t, nil
}

// scheduleRequest is the body of POST /v1/schedules.
type scheduleRequest struct {
	Name      string          `json:"name"`
	Algorithm string          `json:"algorithm"`
	Every     string          `json:"every"`
	Cron      string          `json:"cron"`
	Input     json.RawMessage `json:"input"`
	Timeout   string          `json:"timeout"`
	Priority  string          `json:"priority"`
}

// schedule reads the request into a jobs.Schedule, reporting every bad
// field.
func (req scheduleRequest) schedule() (jobs.Schedule, error) {
	sch := jobs.Schedule{Name: req.Name, Algorithm: req.Algorithm, Cron: req.Cron, Input: req.Input, Priority: jobs.Priority(req.Priority)}
	var errs []error
	if req.Every != "" {
		d, err := time.ParseDuration(req.Every)
		if err != nil {
			errs = append(errs, fmt.Errorf("every %q: not a duration such as 1h30m", req.Every))
			d = time.Second // reported above; not again as missing
		}
		sch.Every = d
	}
	if req.Timeout != "" {
		d, err := time.ParseDuration(req.Timeout)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("timeout %q: not a positive duration such as 30s", req.Timeout))
			d = 0
		}
		sch.Timeout = d
	}
	if err := sch.Validate(); err != nil {
		errs = append(errs, err)
	}
	return sch, errors.Join(errs...)
}

// listSchedules is GET /v1/schedules: the periodic jobs with their next
// run.
func (g *Gateway) listSchedules(w http.ResponseWriter, r *http.Request) {
	list, err := g.store.ListSchedules(r.Context())
	if errors.Is(err, jobs.ErrNoSchedules) {
		list = []jobs.Schedule{}
		err = nil
	}
	if err != nil {
		g.log.Warn().Err(err).Msg("listing schedules failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot list schedules: JetStream unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// addSchedule is POST /v1/schedules: store a periodic job, replacing one
// of the same name.
func (g *Gateway) addSchedule(w http.ResponseWriter, r *http.Request) {
	body, ok := g.readBody(w, r)
	if !ok {
		return
	}
	var req scheduleRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: "the body is not a schedule: " + err.Error()})
		return
	}
	sch, err := req.schedule()
	if err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Algorithm: req.Algorithm, Message: "invalid schedule: " + strings.ReplaceAll(err.Error(), "\n", "; ")})
		return
	}
	if err := g.store.AddSchedule(r.Context(), sch); err != nil {
		g.scheduleError(w, sch.Name, err)
		return
	}
	list, err := g.store.ListSchedules(r.Context())
	if err == nil {
		for _, s := range list {
			if s.Name == sch.Name {
				sch = s
			}
		}
	}
	w.Header().Set("Location", "/v1/schedules/"+sch.Name)
	writeJSON(w, http.StatusCreated, sch)
}

// removeSchedule is DELETE /v1/schedules/{name}.
func (g *Gateway) removeSchedule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !jobs.ValidScheduleName(name) {
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("%q cannot name a schedule", name)})
		return
	}
	if err := g.store.RemoveSchedule(r.Context(), name); err != nil {
		g.scheduleError(w, name, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// scheduleError writes the problem of a failed schedule operation.
func (g *Gateway) scheduleError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, jobs.ErrNoSchedule):
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no schedule %s", name)})
	case errors.Is(err, jobs.ErrTooLarge):
		writeProblem(w, problem{Code: http.StatusRequestEntityTooLarge, Message: strings.TrimPrefix(err.Error(), "jobs: ")})
	case errors.Is(err, jobs.ErrNoSchedules):
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: strings.TrimPrefix(err.Error(), "jobs: ")})
	default:
		g.log.Warn().Err(err).Str("schedule", name).Msg("schedule operation failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot change the schedules: JetStream unavailable"})
	}
}

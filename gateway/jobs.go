package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pnpworker/pnpworker/jobs"
)

// listJobs is GET /v1/jobs: result records, most recently written first,
// filtered by algorithm, status and since, one page of limit at a time;
// next in the answer is the cursor of the following page.
func (g *Gateway) listJobs(w http.ResponseWriter, r *http.Request) {
	opts, err := listOptions(r, time.Now())
	if err = errors.Join(err, opts.Validate()); err != nil {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: optionMessage(err)})
		return
	}
	page, err := g.store.ListJobs(r.Context(), opts)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, page)
	case r.Context().Err() != nil:
	default:
		g.log.Warn().Err(err).Msg("listing jobs failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot list jobs: JetStream unavailable"})
	}
}

// listQuery names the query parameters of GET /v1/jobs.
var listQuery = []string{"algorithm", "status", "since", "limit", "cursor"}

// listOptions reads the query of GET /v1/jobs; an unknown parameter, one
// given twice, or a limit or since that does not parse is an
// *jobs.OptionError naming it.
func listOptions(r *http.Request, now time.Time) (jobs.ListOptions, error) {
	q := r.URL.Query()
	var errs []error
	for k, vs := range q {
		switch {
		case !slices.Contains(listQuery, k):
			errs = append(errs, &jobs.OptionError{Option: truncate(k, 100), Message: "unknown parameter; want " + strings.Join(listQuery, ", ")})
		case len(vs) > 1:
			errs = append(errs, &jobs.OptionError{Option: k, Message: "given more than once"})
		}
	}
	opts := jobs.ListOptions{Algorithm: q.Get("algorithm"), Status: jobs.Status(q.Get("status")), Cursor: q.Get("cursor")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, &jobs.OptionError{Option: "limit", Message: fmt.Sprintf("%q is not a whole number (1 to %d)", truncate(v, 100), jobs.MaxListLimit)})
		}
		if err == nil && n == 0 {
			errs = append(errs, jobs.ZeroLimitError())
		}
		opts.Limit = n
	}
	if v := q.Get("since"); v != "" {
		t, err := jobs.ParseSince(v, now)
		if err != nil {
			errs = append(errs, err)
		}
		opts.Since = t
	}
	return opts, errors.Join(errs...)
}

// optionMessage words the errors of a listing's options for a problem:
// each names its parameter.
func optionMessage(err error) string {
	var msgs []string
	for _, oe := range jobs.OptionErrors(err) {
		msgs = append(msgs, "query parameter "+oe.Error())
	}
	if len(msgs) == 0 {
		return err.Error()
	}
	return strings.Join(msgs, "; ")
}

package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pnpworker/pnpworker/jobs"
	"github.com/pnpworker/pnpworker/protocol"
)

// cancel is DELETE /v1/jobs/{id}: the job never runs, or stops running;
// 200 with its cancelled record, 404 for an unknown job, 409 with the
// outcome of a job that has one.
func (g *Gateway) cancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !protocol.ValidJobID(id) {
		writeProblem(w, problem{Code: http.StatusBadRequest, Message: fmt.Sprintf("%q cannot name a job", id)})
		return
	}
	rec, err := g.store.Cancel(r.Context(), id)
	var fin *jobs.FinishedError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, rec)
	case r.Context().Err() != nil:
	case errors.As(err, &fin):
		writeProblem(w, problem{Code: http.StatusConflict, Algorithm: fin.Result.Algorithm, JobStatus: string(fin.Result.Status),
			Message: fmt.Sprintf("job %s already finished: %s", id, fin.Result.Status)})
	case errors.Is(err, jobs.ErrUnknownJob):
		writeProblem(w, problem{Code: http.StatusNotFound, Message: fmt.Sprintf("no job %s: no result record and nothing waiting in JOBS under this id (never submitted, or its result expired)", id)})
	case errors.Is(err, jobs.ErrCorruptResult):
		g.log.Error().Err(err).Str("job_id", id).Msg("corrupt result record")
		writeProblem(w, problem{Code: http.StatusInternalServerError, Message: fmt.Sprintf("the record stored for job %s is not its result", id)})
	default:
		g.log.Warn().Err(err).Str("job_id", id).Msg("cancel failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Message: "cannot cancel the job: " + strings.TrimPrefix(err.Error(), "jobs: ")})
	}
}

// known reports whether jobs of algorithm name are accepted: a runner
// serves it now, served it before, or it was declared. Otherwise it
// answers 404 with the closest known names and reports false.
func (g *Gateway) known(w http.ResponseWriter, r *http.Request, name string) bool {
	if len(g.cache.Lookup(name)) > 0 {
		return true
	}
	err := g.store.CheckKnown(r.Context(), name)
	var unknown *jobs.UnknownAlgorithmError
	switch {
	case err == nil:
		return true
	case errors.As(err, &unknown):
		writeProblem(w, problem{Code: http.StatusNotFound, Algorithm: name, Message: unknown.Error(), Suggestions: unknown.Suggestions})
	case r.Context().Err() != nil:
	default:
		g.log.Warn().Err(err).Str("algorithm", name).Msg("checking the algorithm failed")
		writeProblem(w, problem{Code: http.StatusServiceUnavailable, Algorithm: name, Message: "cannot check the algorithm: JetStream unavailable"})
	}
	return false
}

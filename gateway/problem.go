package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/pnpworker/pnpworker/protocol"
	"github.com/pnpworker/pnpworker/schemas"
)

// problem is an RFC 9457 problem document carrying the fields of the NATS
// error body (schemas/error.json): code, message, violations, and who
// answered.
type problem struct {
	Type       string              `json:"type"`
	Title      string              `json:"title"`
	Status     int                 `json:"status"`
	Detail     string              `json:"detail,omitempty"`
	Code       int                 `json:"code"`
	Message    string              `json:"message"`
	Algorithm  string              `json:"algorithm,omitempty"`
	Instance   string              `json:"instance,omitempty"`
	Violations []schemas.Violation `json:"violations,omitempty"`
	// Suggestions are the known algorithm names closest to an unknown
	// one (404 of a job submission).
	Suggestions []string `json:"suggestions,omitempty"`
	// JobStatus is the outcome of a job that cannot be cancelled because
	// it has one (409 of a cancel).
	JobStatus string `json:"job_status,omitempty"`
}

// fromRunnerError is the problem for a runner's error reply: its code
// becomes the HTTP status.
func fromRunnerError(e *protocol.Error) problem {
	return problem{Code: e.Code, Message: e.Message, Algorithm: e.Algorithm, Instance: e.Instance, Violations: e.Violations}
}

// writeProblem sends p as application/problem+json with p.Code as status.
func writeProblem(w http.ResponseWriter, p problem) {
	if p.Code == 0 {
		p.Code = http.StatusInternalServerError
	}
	p.Type = "about:blank"
	p.Status = p.Code
	p.Title = http.StatusText(p.Code)
	p.Detail = p.Message
	b, err := json.Marshal(p)
	if err != nil {
		b = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500,"code":500,"message":"internal error"}`)
		p.Code = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Code)
	_, _ = w.Write(append(b, '\n'))
}

// writeJSON sends v as application/json with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, problem{Code: http.StatusInternalServerError, Message: "internal error"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

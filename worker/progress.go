package worker

import (
	"regexp"

	"github.com/pnpworker/pnpworker/runner"
)

// progressPattern finds a progress report in a line that is not valid
// JSON (one that starts as a progress message does): it is dropped, and
// fails no request.
var progressPattern = regexp.MustCompile(`^\s*\{\s*"type"\s*:\s*"progress"`)

// progress passes a worker's progress report on to the request it names
// (runner.Progress). A report for no pending request, or with bad values,
// is logged within the log budget and dropped: it never fails a request
// nor ends the session.
func (s *session) progress(m inbound) {
	s.mu.Lock()
	c := s.pending[m.ID]
	s.mu.Unlock()
	switch {
	case c == nil:
		s.lg().Debug().Str("id", m.ID).Msg("progress for a request no longer waiting")
	case m.Fraction == nil:
		s.badProgress(m.ID, "no fraction")
	default:
		if err := runner.Progress(c.ctx, *m.Fraction, m.Message); err != nil {
			s.badProgress(m.ID, err.Error())
		}
	}
}

// badProgress logs a progress report that was dropped.
func (s *session) badProgress(id, why string) {
	if s.logs.allow() {
		s.base().Warn().Str("id", cut(id, 64)).Str("problem", cut(why, maxDetail)).Msg("worker sent a bad progress report; ignored")
	}
}

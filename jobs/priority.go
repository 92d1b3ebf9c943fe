package jobs

import (
	"fmt"
	"strings"

	"github.com/pnpworker/pnpworker/discovery"
)

// Priority is a job's place in line among its algorithm's waiting jobs
// (HeaderPriority). A job of priority normal waits on
// JobsSubjectPrefix+<algorithm>, as every job did before priorities; high
// and low ones on JobsSubjectPrefix+<algorithm>+"."+<priority>. Each has
// its own durable consumer (PriorityConsumerName), and the controller
// hands waiting jobs to its workers by weight (DispatchWeights): high
// ones go first, and the others still progress.
type Priority string

// The priorities. The zero value means PriorityNormal.
const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Priorities lists the priorities, highest first.
var Priorities = [3]Priority{PriorityHigh, PriorityNormal, PriorityLow}

// DispatchWeights says, for Priorities in order, how many of every ten
// jobs the controller hands to its workers go to that priority while jobs
// of every priority wait: 7 high, 2 normal, 1 low. A priority with
// nothing waiting gives its turns to the others, highest first, so while
// high jobs wait, low ones still get at least 1 of every 10 dispatches,
// normal ones at least 2.
var DispatchWeights = [3]int{7, 2, 1}

// HeaderPriority carries a job's priority (high, normal, low). Submit sets
// it on high and low jobs, so that a dead letter keeps it and a replay
// queues the job where it was.
const HeaderPriority = "Pnp-Priority"

// Valid reports whether p is a priority ("" counts as normal).
func (p Priority) Valid() bool {
	return p == "" || p == PriorityHigh || p == PriorityNormal || p == PriorityLow
}

// ParsePriority reads a priority: high, normal or low; "" is normal.
func ParsePriority(s string) (Priority, error) {
	p := Priority(s)
	if !p.Valid() {
		return "", fmt.Errorf("priority %q: want high, normal or low", truncate(s, 100))
	}
	if p == "" {
		p = PriorityNormal
	}
	return p, nil
}

// subjectSuffix is what follows the algorithm in the subject of a job of
// priority p: nothing for normal.
func (p Priority) subjectSuffix() string {
	if p == PriorityHigh || p == PriorityLow {
		return "." + string(p)
	}
	return ""
}

// JobSubject is the subject of a job of algorithm with priority p.
func JobSubject(algorithm string, p Priority) string {
	return JobsSubjectPrefix + algorithm + p.subjectSuffix()
}

// SubjectAlgorithm reads the algorithm and priority of a job's subject
// (JobsSubjectPrefix+<algorithm>[.high|.low]). The algorithm is whatever
// stands there, valid or not.
func SubjectAlgorithm(subject string) (string, Priority) {
	rest := strings.TrimPrefix(subject, JobsSubjectPrefix)
	if alg, p, ok := strings.Cut(rest, "."); ok {
		switch Priority(p) {
		case PriorityHigh:
			return alg, PriorityHigh
		case PriorityLow:
			return alg, PriorityLow
		}
	}
	return rest, PriorityNormal
}

// PriorityConsumerName is the durable consumer of JOBS that every
// controller replica shares for algorithm's jobs of priority p:
// ConsumerName(algorithm) for normal ones, with "-high" or "-low"
// appended for the others ('-' is in no algorithm name, so no other
// algorithm's consumer has the name).
func PriorityConsumerName(algorithm string, p Priority) string {
	if p == PriorityHigh || p == PriorityLow {
		return ConsumerName(algorithm) + "-" + string(p)
	}
	return ConsumerName(algorithm)
}

// ConsumerQueue reads a name made by PriorityConsumerName back: the
// algorithm and priority whose jobs the consumer takes. It reports false
// for the name of any other consumer.
func ConsumerQueue(name string) (string, Priority, bool) {
	rest, ok := strings.CutPrefix(name, ConsumerPrefix)
	if !ok {
		return "", "", false
	}
	alg, p := rest, PriorityNormal
	for _, q := range [2]Priority{PriorityHigh, PriorityLow} {
		if a, ok := strings.CutSuffix(rest, "-"+string(q)); ok {
			alg, p = a, q
		}
	}
	if !discovery.ValidAlgorithmName(alg) {
		return "", "", false
	}
	return alg, p, true
}

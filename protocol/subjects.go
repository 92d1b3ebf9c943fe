package protocol

import "strings"

// SubjectPrefix starts every request subject: an instance of algorithm a
// serves on SubjectPrefix+a (RequestSubject) and on its pinned subject
// (PinnedSubject), and on nothing else.
const SubjectPrefix = "run."

// RequestSubject is the shared request subject of algorithm,
// "run.<algorithm>": every live instance of every version may serve it,
// in one queue group (unless a route narrows it to the stable version).
// Together with PinnedSubject it is the only subject a registration record
// may carry, so no record can direct readers into the jobs, results or
// dead-letter namespaces, or to another algorithm's runners.
func RequestSubject(algorithm string) string { return SubjectPrefix + algorithm }

// PinnedSubject is the subject only instances of one version of algorithm
// serve: "run.<algorithm>.v<version>" with the version encoded as one
// subject token by EncodeVersion, e.g. run.ocr.v1_2_0 for 1.2.0. Every
// instance subscribes it (in its queue group) next to RequestSubject.
func PinnedSubject(algorithm, version string) string {
	return SubjectPrefix + algorithm + ".v" + EncodeVersion(version)
}

// EncodeVersion turns a semantic version into one subject token: '.'
// becomes '_' and '+' becomes "__". Semantic versions hold neither '_' nor
// empty identifiers, so the mapping is one to one: 1.2.0 is "1_2_0",
// 2.0.0-rc.1+build.5 is "2_0_0-rc_1__build_5".
func EncodeVersion(version string) string {
	return strings.NewReplacer(".", "_", "+", "__").Replace(version)
}

// CancelSubjectPrefix starts the subjects on which the instances of an
// algorithm hear that a job was cancelled: CancelSubject.
const CancelSubjectPrefix = "cancel."

// CancelSubject is where a job of algorithm is cancelled,
// "cancel.<algorithm>": every instance of the algorithm subscribes it (a
// plain subscription, not a queue group), and the body of a message there
// is the id of the job to stop. The instance running the job cancels its
// context and answers its request with an error; an instance that gets
// the job's request later refuses it unrun.
func CancelSubject(algorithm string) string { return CancelSubjectPrefix + algorithm }

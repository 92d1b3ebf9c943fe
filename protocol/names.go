package protocol

import (
	"regexp"
	"strings"
)

var instanceID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidAlgorithmName reports whether name can be an algorithm name: lower
// case letters, digits and underscores, starting with a letter, at most 64
// characters. Such a name is a single subject token and a valid KV key token.
func ValidAlgorithmName(name string) bool {
	// A loop, not a regular expression: the gateway and the controller
	// check a name on every request and job.
	if len(name) == 0 || len(name) > 64 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// ValidInstanceID reports whether id can be an instance id: 1 to 64
// letters, digits, '_' or '-', one subject token and one KV key token.
func ValidInstanceID(id string) bool { return instanceID.MatchString(id) }

// MaxJobIDLen is the longest job id, in bytes: it keeps a job id well
// inside subject and key limits.
const MaxJobIDLen = 255

// ValidJobID reports whether id can name a job: at most 255 letters,
// digits, '_', '=', '-', and single dots between them. Such an id is a
// valid key in the results bucket.
func ValidJobID(id string) bool {
	if len(id) == 0 || len(id) > MaxJobIDLen || id[0] == '.' || id[len(id)-1] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '=', c == '-':
		case c == '.' && id[i-1] != '.':
		default:
			return false
		}
	}
	return true
}

// AutoJobIDPrefix begins the ids the controller gives jobs that came
// without one ("auto-<stream sequence>-<unix ms>"). A producer may not
// choose such an id (ReservedJobID).
const AutoJobIDPrefix = "auto-"

// ReservedJobID reports whether id has the form of an id the controller
// assigns (the AutoJobIDPrefix), which a producer may not choose.
func ReservedJobID(id string) bool { return strings.HasPrefix(id, AutoJobIDPrefix) }

// Subjects of the job pipeline (docs/JOBS.md).
const (
	// JobsSubjectPrefix starts a job's subject: a producer submits a job
	// for algorithm a on JobsSubjectPrefix+a (JobSubject).
	JobsSubjectPrefix = "jobs."
	// DeadSubjectPrefix starts a dead letter's subject: a job for a that
	// cannot succeed is kept on DeadSubjectPrefix+a (DeadSubject).
	DeadSubjectPrefix = "dead."
	// NotifySubjectPrefix starts every subject a job's Pnp-Notify may
	// name. No stream of the system captures it, so a notification can
	// never write a result, a dead letter or a job.
	NotifySubjectPrefix = "notify."
)

// JobSubject is the subject a job for algorithm is submitted on,
// "jobs.<algorithm>".
func JobSubject(algorithm string) string { return JobsSubjectPrefix + algorithm }

// DeadSubject is the subject of algorithm's dead letters,
// "dead.<algorithm>".
func DeadSubject(algorithm string) string { return DeadSubjectPrefix + algorithm }

// maxNotifyLen bounds a notification subject.
const maxNotifyLen = 255

// ValidNotifySubject reports whether subj may receive a job's result
// record: "notify." followed by one or more non-empty tokens, without
// wildcards, whitespace or control characters, at most 255 bytes.
func ValidNotifySubject(subj string) bool {
	if len(subj) > maxNotifyLen || !strings.HasPrefix(subj, NotifySubjectPrefix) {
		return false
	}
	for _, tok := range strings.Split(subj[len(NotifySubjectPrefix):], ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

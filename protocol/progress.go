package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ProgressSubjectPrefix starts the subjects on which the instances of an
// algorithm report how far a running job got: ProgressSubject.
const ProgressSubjectPrefix = "progress."

// ProgressSubject is where an instance of algorithm reports the progress
// of a job it runs, "progress.<algorithm>": the way of cancel.<algorithm>
// (CancelSubject) in the other direction. Controllers subscribe
// "progress.*" (a plain subscription each), and the one that holds the
// job stores the progress in the job's record. The job id is in the body
// (Progress), not the subject: a job id may hold dots.
func ProgressSubject(algorithm string) string { return ProgressSubjectPrefix + algorithm }

// ProgressAlgorithm returns the algorithm of a progress subject, and
// false when subject is not one.
func ProgressAlgorithm(subject string) (string, bool) {
	alg, ok := strings.CutPrefix(subject, ProgressSubjectPrefix)
	if !ok || !ValidAlgorithmName(alg) {
		return "", false
	}
	return alg, true
}

// MaxProgressMessage is the longest progress message, in bytes.
const MaxProgressMessage = 200

// Progress is the body of a message on ProgressSubject, and what a
// running job's record shows of it (the record adds when it was stored).
type Progress struct {
	// JobID is the job the progress is about (the request's Pnp-Job-Id).
	JobID string `json:"job_id"`
	// Fraction is how much of the job is done, from 0 to 1.
	Fraction float64 `json:"fraction"`
	// Message says what the job is doing, for people: at most
	// MaxProgressMessage bytes of printable UTF-8 (CheckProgressMessage).
	Message string `json:"message,omitempty"`
	// Instance names the instance running the job.
	Instance string `json:"instance,omitempty"`
}

// CheckProgressFraction returns an error unless f is a number from 0 to 1.
func CheckProgressFraction(f float64) error {
	if math.IsNaN(f) || f < 0 || f > 1 {
		return fmt.Errorf("progress fraction %v: want a number from 0 to 1", f)
	}
	return nil
}

// CheckProgressMessage returns an error unless msg can be shown on a
// terminal as it is: at most MaxProgressMessage bytes of valid UTF-8
// without control characters (no escape sequences, no line breaks).
func CheckProgressMessage(msg string) error {
	if len(msg) > MaxProgressMessage {
		return fmt.Errorf("progress message of %d bytes: at most %d", len(msg), MaxProgressMessage)
	}
	if !utf8.ValidString(msg) {
		return errors.New("progress message: not valid UTF-8")
	}
	for i, r := range msg {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.In(r, unicode.Bidi_Control) {
			return fmt.Errorf("progress message: control character %U at byte %d (want one line of printable text)", r, i)
		}
	}
	return nil
}

// Validate returns an error naming the first field of p that is wrong.
func (p Progress) Validate() error {
	if !ValidJobID(p.JobID) {
		return fmt.Errorf("progress job_id %q: not a valid job id", cutString(p.JobID, 100))
	}
	if err := CheckProgressFraction(p.Fraction); err != nil {
		return err
	}
	if err := CheckProgressMessage(p.Message); err != nil {
		return err
	}
	if p.Instance != "" && !ValidInstanceID(p.Instance) {
		return fmt.Errorf("progress instance %q: not a valid instance id", cutString(p.Instance, 100))
	}
	return nil
}

// maxProgressBody bounds a progress message's body: a longer one cannot
// be a valid Progress.
const maxProgressBody = 2048

// DecodeProgress decodes and checks the body of a progress message.
func DecodeProgress(data []byte) (Progress, error) {
	var p Progress
	if len(data) > maxProgressBody {
		return p, fmt.Errorf("progress body of %d bytes: at most %d", len(data), maxProgressBody)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return Progress{}, fmt.Errorf("progress body: %w", err)
	}
	return p, p.Validate()
}

// cutString cuts s to at most n bytes, on a rune boundary.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

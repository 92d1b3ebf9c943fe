// Package languagedetection is the language_detection algorithm: it names
// the language and script of a text with github.com/abadojack/whatlanggo
// (trigram profiles of 84 languages).
package languagedetection

import (
	"context"
	"time"
	"unicode"

	"github.com/abadojack/whatlanggo"

	"pnpworker/runner"
	"pnpworker/schemas"
)

// Name is the algorithm's name; it is served on run.language_detection.
const Name = "language_detection"

// MinLetters is the fewest letters a text needs before a language is named.
const MinLetters = 3

// Input is the request body (schemas/language_detection.input.json).
type Input struct {
	Text string `json:"text"`
	// AllowUnreliable returns the best guess, marked reliable=false,
	// instead of rejecting text the detector is not confident about.
	AllowUnreliable bool `json:"allow_unreliable,omitempty"`
}

// Output is the reply body (schemas/language_detection.output.json).
type Output struct {
	Language   string  `json:"language"`
	ISO6391    string  `json:"iso639_1,omitempty"`
	Name       string  `json:"name"`
	Script     string  `json:"script"`
	Confidence float64 `json:"confidence"`
	Reliable   bool    `json:"reliable"`
}

// New returns the language_detection algorithm.
func New() (*runner.Algorithm, error) {
	return runner.NewAlgorithm(runner.Spec{
		Name:         Name,
		Version:      "1.0.0",
		Description:  "Identifies the language and script of a text (84 languages, trigram profiles).",
		InputSchema:  schemas.Bytes("language_detection.input.json"),
		OutputSchema: schemas.Bytes("language_detection.output.json"),
		Timeout:      5 * time.Second, // detection is linear in the text, capped at 100k characters
	}, Detect)
}

// Detect names the language of in.Text. Text with fewer than MinLetters
// letters, text in no supported script, and (unless in.AllowUnreliable)
// text the detector is not confident about are rejected with a 422.
func Detect(ctx context.Context, in Input) (Output, error) {
	letters := 0
	for _, r := range in.Text {
		if unicode.IsLetter(r) {
			letters++
			if letters >= MinLetters {
				break
			}
		}
	}
	if letters < MinLetters {
		return Output{}, runner.Reject("text has %d letters; at least %d are needed to identify a language", letters, MinLetters)
	}
	info := whatlanggo.Detect(in.Text)
	if info.Script == nil || info.Lang < 0 {
		return Output{}, runner.Reject("text is in no supported script; cannot identify its language")
	}
	reliable := info.IsReliable()
	if !reliable && !in.AllowUnreliable {
		return Output{}, runner.Reject("cannot identify the language reliably (best guess %s at confidence %.2f); send more text or set allow_unreliable", info.Lang.String(), info.Confidence)
	}
	return Output{
		Language:   info.Lang.Iso6393(),
		ISO6391:    info.Lang.Iso6391(),
		Name:       info.Lang.String(),
		Script:     whatlanggo.Scripts[info.Script],
		Confidence: round3(info.Confidence),
		Reliable:   reliable,
	}, nil
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

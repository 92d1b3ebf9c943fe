// Package languagedetection is the language_detection algorithm: it names
// the language and script of a text with github.com/abadojack/whatlanggo
// (trigram profiles of 84 languages).
package languagedetection

import (
	"context"
	"time"
	"unicode"

	"github.com/abadojack/whatlanggo"

	"github.com/pnpworker/pnpworker/runner"
	"github.com/pnpworker/pnpworker/schemas"
)

// Name is the algorithm's name; it is served on run.language_detection.
const Name = "language_detection"

// MinLetters is the fewest letters a text needs before a language is named:
// below that, trigram statistics are noise.
const MinLetters = 10

// Input is the request body (schemas/language_detection.input.json). Its
// tags carry the schema's bounds: the schema runner.SchemaFor derives from
// Input and Output accepts and refuses what the files do (a test holds them
// together).
type Input struct {
	Text string `json:"text" jsonschema:"minLength=1,maxLength=100000"`
	// MinConfidence rejects (422) a result less confident than this. At the
	// default 0 the best guess is returned, with reliable=false when the
	// detector is not sure.
	MinConfidence float64 `json:"min_confidence,omitempty" jsonschema:"minimum=0,maximum=1,default=0"`
}

// Output is the reply body (schemas/language_detection.output.json).
type Output struct {
	Language string `json:"language"`
	ISO6391  string `json:"iso639_1,omitempty"`
	Name     string `json:"name"`
	Script   string `json:"script"`
	// Confidence in [0,1] is how clearly the best language beat the
	// runner-up (1 = by a wide margin).
	Confidence float64 `json:"confidence" jsonschema:"minimum=0,maximum=1"`
	// Reliable is true when Confidence is above the detector's
	// reliability threshold (0.8), or the script has one language only.
	Reliable bool `json:"reliable"`
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
// letters, text in no supported script, and results less confident than
// in.MinConfidence are rejected with a 422.
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
	if info.Confidence < in.MinConfidence {
		return Output{}, runner.Reject("confidence %.2f is below min_confidence %.2f (best guess %s); send more text", info.Confidence, in.MinConfidence, info.Lang.String())
	}
	script := whatlanggo.Scripts[info.Script]
	if script == "" && info.Lang == whatlanggo.Jpn {
		script = "Hiragana/Katakana" // whatlanggo's own table for kana
	}
	return Output{
		Language:   info.Lang.Iso6393(),
		ISO6391:    info.Lang.Iso6391(),
		Name:       info.Lang.String(),
		Script:     script,
		Confidence: round3(info.Confidence),
		Reliable:   info.IsReliable(),
	}, nil
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

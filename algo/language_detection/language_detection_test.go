package languagedetection_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	languagedetection "github.com/pnpworker/pnpworker/algo/language_detection"
	"github.com/pnpworker/pnpworker/runner"
)

func TestDetect(t *testing.T) {
	cases := []struct {
		name, text, lang, iso1, script string
	}{
		{"english", "Teams keep writing algorithms and want to run them on incoming data without touching the plumbing each time.", "eng", "en", "Latin"},
		{"french", "Le renard brun saute par-dessus le chien paresseux", "fra", "fr", "Latin"},
		{"german", "Die Mannschaften schreiben immer wieder Algorithmen und wollen sie auf neue Daten anwenden, ohne sich jedes Mal um die Technik zu kümmern.", "deu", "de", "Latin"},
		{"spanish", "Los equipos escriben algoritmos y quieren ejecutarlos sobre los datos que llegan sin tocar la infraestructura cada vez.", "spa", "es", "Latin"},
		{"russian", "Быстрая коричневая лиса прыгает через ленивую собаку", "rus", "ru", "Cyrillic"},
		{"japanese", "素早い茶色の狐がのろまな犬を飛び越える", "jpn", "ja", "Hiragana/Katakana"},
		{"korean", "빠른 갈색 여우가 게으른 개를 뛰어넘는다", "kor", "ko", "Hangul"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := languagedetection.Detect(context.Background(), languagedetection.Input{Text: tc.text})
			if err != nil {
				t.Fatal(err)
			}
			if out.Language != tc.lang || out.ISO6391 != tc.iso1 || out.Script != tc.script || !out.Reliable || out.Confidence <= 0 || out.Confidence > 1 {
				t.Fatalf("got %+v, want %s/%s/%s", out, tc.lang, tc.iso1, tc.script)
			}
		})
	}
}

func TestDetectRejects(t *testing.T) {
	cases := []struct {
		name string
		in   languagedetection.Input
		want string
	}{
		{"too few letters", languagedetection.Input{Text: "hello you"}, "8 letters; at least 10"},
		{"digits and punctuation", languagedetection.Input{Text: "12345 !!! 678"}, "0 letters"},
		{"unsupported script", languagedetection.Input{Text: "ᚠᚢᚦᚨᚱᚲ ᚷᚹᚺᚾ"}, "no supported script"},
		{"below min_confidence", languagedetection.Input{Text: "taxi hotel restaurant", MinConfidence: 0.9}, "below min_confidence"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := languagedetection.Detect(context.Background(), tc.in)
			if !errors.Is(err, runner.ErrUnprocessable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a 422 mentioning %q", err, tc.want)
			}
		})
	}
	// Without min_confidence the best guess comes back, marked unreliable.
	out, err := languagedetection.Detect(context.Background(), languagedetection.Input{Text: "taxi hotel restaurant"})
	if err != nil || out.Reliable || out.Confidence >= 0.8 {
		t.Fatalf("ambiguous text: %+v %v", out, err)
	}
}

func TestDefinition(t *testing.T) {
	a, err := languagedetection.New()
	if err != nil {
		t.Fatal(err)
	}
	if a.Name() != "language_detection" || a.Subject() != "run.language_detection" {
		t.Fatalf("name %s subject %s", a.Name(), a.Subject())
	}
	for body, ok := range map[string]bool{
		`{"text":"hello world"}`:                         true,
		`{"text":""}`:                                    false,
		`{"text":"a","extra":1}`:                         false,
		`{"text":"` + strings.Repeat("a", 100001) + `"}`: false,
	} {
		if err := a.ValidateInput([]byte(body)); (err == nil) != ok {
			t.Errorf("ValidateInput(%.40s) = %v, want ok=%v", body, err, ok)
		}
	}
}

package jobs_test

import (
	"slices"
	"testing"

	"github.com/pnpworker/pnpworker/jobs"
)

func TestClosest(t *testing.T) {
	known := []string{"word_stats", "language_detection", "image_info", "image_thumbnail", "meme_classifier", "text_stats"}
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"wordstats", []string{"word_stats"}},
		{"Word_Stats", []string{"word_stats"}},
		{"language_detecton", []string{"language_detection"}},
		{"image_inf", []string{"image_info"}},
		{"text_stat", []string{"text_stats"}},
		{"word_stats", nil}, // itself is no suggestion
		{"zzzzzzzzzz", nil},
		{"a", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := jobs.Closest(tc.name, known)
			if len(got) == 0 && len(tc.want) == 0 {
				return
			}
			if len(got) == 0 || got[0] != tc.want[0] {
				t.Fatalf("Closest(%q) = %v, want %v first", tc.name, got, tc.want)
			}
		})
	}
	if got := jobs.Closest("stats", []string{"text_stats", "word_stats", "stat", "stats_"}); len(got) > 3 || !slices.Contains(got, "stat") {
		t.Fatalf("Closest(stats) = %v: want at most three, the nearest included", got)
	}
}

func TestUnknownAlgorithmError(t *testing.T) {
	err := error(&jobs.UnknownAlgorithmError{Name: "wordstats", Suggestions: []string{"word_stats"}})
	want := `unknown algorithm "wordstats": no runner has ever registered for it and it was not declared ('pnp algorithms declare wordstats' accepts its jobs before its runners start); did you mean word_stats?`
	if err.Error() != want {
		t.Fatalf("message\n%s\nwant\n%s", err, want)
	}
}
